"""Stateful test: three replicas append, partition, heal and merge in hypothesis-drawn
orders; managers resolve conflicts as they see them.

Each replica is an in-memory SQLite db folded by `StoreState`, plus the set of events it
holds (the dedup harness: merging hands the other side exactly what it lacks, in an order
and batching hypothesis draws; the fold must not care). After every full heal:

- strong eventual consistency: equal digests and equal conflict lists everywhere;
- merge laws at the state level: folding the three pre-heal event sets one after the
  other, in any drawn order and with all their overlaps (duplicates), gives that same
  digest - commutative, associative, idempotent;
- the state agrees with the plain sequential reference models (stock, sales totals);
- every conflict id is the hash of its kind, subject and events, and ids are unique;
- one effective resolution per conflict (issue 21): replicas resolving the same conflict
  on two sides of a partition (`resolve_concurrently`) end with the same single
  effective resolution, the model's earliest by (hlc, origin, seq), every other listed
  as superseded; stock equals the model that applies the effective one's effects only.

Every run ends with a full heal and these checks (teardown), and `heal` is also a rule,
so partitions heal at random points too. Budget: max_examples=1000 x
stateful_step_count=8 (8000 steps, each run 3 fresh dbs) takes ~30 s of CPU here,
which keeps the whole of tests/conflict near 75 s.
"""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from conflict import queries
from conflict.detect import Conflict, conflict_id, detect
from conflict.errors import ConflictError
from conflict.policies import Policies
from conflict.resolve import ACTIONS, resolution_bodies
from conflict.state import StoreState
from core import digest
from core.events import ConflictResolved, SaleCompleted
from core.fold import Accepted

from .factory import Chain, _body, apply_all, fresh_db, stock_by_key
from .model import effective_resolutions, model_sales, model_stock

ORIGINS = ("hq", "s1/t1", "s1/t2")
PAIRS = ((0, 1), (0, 2), (1, 2))
_cuts = st.lists(st.integers(0, 30), max_size=3)


_TEMPLATES: dict[tuple[str, int], sqlite3.Connection] = {}


def _fresh(fold: StoreState) -> sqlite3.Connection:
    """An empty state db: a copy of a per-policy template (twice as fast as the DDL)."""
    key = (fold.price_policy, fold.window_ms)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = fresh_db(fold)
    conn = sqlite3.connect(":memory:")
    _TEMPLATES[key].backup(conn)
    digest.register(conn)  # a copy has the triggers, not the functions they call
    return conn


class Replica:
    def __init__(self, fold: StoreState) -> None:
        self.conn = _fresh(fold)
        self.held: dict[str, Accepted] = {}

    def sale_ids(self) -> list[str]:
        return sorted(e for e, a in self.held.items() if isinstance(a.body, SaleCompleted))


def _digest_of(fold: StoreState, batches: list[list[Accepted]]) -> str:
    conn = _fresh(fold)
    try:
        for batch in batches:
            apply_all(fold, conn, batch)
        return queries.state_digest(conn)
    finally:
        conn.close()


class Mesh(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.chain = Chain()
        self.ms = 1_000_000
        self.up = dict.fromkeys(PAIRS, True)
        self.fold = StoreState()
        self.policies = Policies()
        self.reps: list[Replica] = []

    @initialize(
        price=st.sampled_from(("latest", "hq_wins", "lowest")),
        oversell=st.sampled_from(("allow_and_report", "flag_recount")),
    )
    def setup(self, price: str, oversell: str) -> None:
        self.policies = Policies(price=price, oversell=oversell)  # type: ignore[arg-type]
        self.fold = StoreState(self.policies.price, self.policies.concurrency_window_ms)
        self.reps = [Replica(self.fold) for _ in ORIGINS]

    def teardown(self) -> None:
        """Every run ends healed: merge everything in a fixed order and check."""
        if self.reps:
            before = [list(r.held.values()) for r in self.reps]
            for dst, src in ((0, 1), (0, 2), (1, 0), (2, 0)):
                self._pull(dst, src, None)
            self._check_converged(before, None)
        for r in self.reps:
            r.conn.close()

    def _append(self, i: int, accs: list[Accepted]) -> None:
        rep = self.reps[i]
        apply_all(self.fold, rep.conn, accs)
        rep.held.update((a.event.id, a) for a in accs)

    @rule(i=st.integers(0, 2), step=st.sampled_from((0, 1, 700, 3000, 20_000)), data=st.data())
    def append(self, i: int, step: int, data: st.DataObject) -> None:
        self.ms += step
        body = data.draw(_body(self.reps[i].sale_ids()))
        self._append(i, [self.chain.make(ORIGINS[i], body, self.ms)])

    @rule(i=st.integers(0, 2), data=st.data())
    def resolve(self, i: int, data: st.DataObject) -> None:
        rep = self.reps[i]
        still_open = detect(rep.conn, self.policies, open_only=True)
        if not still_open:
            return
        self._resolve(i, data.draw(st.sampled_from(still_open)), data)

    @rule(data=st.data())
    def resolve_concurrently(self, data: st.DataObject) -> None:
        """Managers at several replicas resolve one conflict each sees open, each from
        what its own replica holds (a partition keeps them from seeing each other's)."""
        seen = [{c.id: c for c in detect(r.conn, self.policies, open_only=True)}
                for r in self.reps]  # fmt: skip
        shared = sorted({cid for i, ids in enumerate(seen) for cid in ids
                         if sum(cid in other for other in seen) >= 2})  # fmt: skip
        if not shared:
            return
        cid = data.draw(st.sampled_from(shared))
        for i in [i for i in range(3) if cid in seen[i]]:
            self._resolve(i, seen[i][cid], data)

    def _resolve(self, i: int, c: Conflict, data: st.DataObject) -> None:
        rep = self.reps[i]
        action = data.draw(st.sampled_from(ACTIONS[c.kind]))
        price = data.draw(st.integers(0, 999)) if action == "choose_price" else None
        count = data.draw(st.none() | st.integers(0, 20)) if action == "recount" else None
        try:
            bodies = resolution_bodies(
                rep.conn, c, action, "mgr", "seen", author=ORIGINS[i], price=price, count=count
            )
        except ConflictError:  # e.g. nothing left to compensate, or another store's stock
            bodies = resolution_bodies(rep.conn, c, "accept", "mgr", "seen", author=ORIGINS[i])
        self.ms += data.draw(st.sampled_from((0, 1, 700)))
        self._append(i, [self.chain.make(ORIGINS[i], b, self.ms) for b in bodies])

    @rule(pair=st.sampled_from(PAIRS))
    def toggle_link(self, pair: tuple[int, int]) -> None:
        self.up[pair] = not self.up[pair]

    def _pull(self, dst: int, src: int, data: st.DataObject | None) -> None:
        """`dst` takes what `src` holds and it lacks, in a drawn order and batching."""
        a, b = self.reps[dst], self.reps[src]
        missing = [acc for eid, acc in sorted(b.held.items()) if eid not in a.held]
        if data is None or not missing:
            order, cuts = missing, []
        else:
            order, cuts = data.draw(st.permutations(missing)), data.draw(_cuts)
        apply_all(self.fold, a.conn, order, cuts)
        a.held.update((acc.event.id, acc) for acc in order)

    @rule(pair=st.sampled_from(PAIRS), both=st.booleans(), data=st.data())
    def merge(self, pair: tuple[int, int], both: bool, data: st.DataObject) -> None:
        if self.up[pair]:
            self._pull(*pair, data)
            if both:
                self._pull(pair[1], pair[0], data)

    @rule(data=st.data())
    def heal(self, data: st.DataObject) -> None:
        before = [list(r.held.values()) for r in self.reps]
        self.up = dict.fromkeys(PAIRS, True)
        for _ in range(2):
            for dst, src in data.draw(st.permutations([(a, b) for a in range(3)
                                                      for b in range(3) if a != b])):  # fmt: skip
                self._pull(dst, src, data)
        self._check_converged(before, data)

    def _check_converged(self, before: list[list[Accepted]], data: st.DataObject | None) -> None:
        digests = {queries.state_digest(r.conn) for r in self.reps}
        assert len(digests) == 1
        lists = [detect(r.conn, self.policies) for r in self.reps]
        assert lists[0] == lists[1] == lists[2]
        if data is not None:  # (in teardown too this would double its cost)
            order = data.draw(st.permutations([0, 1, 2]))
            merged = _digest_of(self.fold, [before[k] for k in order] + [before[order[0]]])
            assert {merged} == digests
        events = list(self.reps[0].held.values())
        self._check_model(self.reps[0].conn, events)
        _check_ids(lists[0])
        _check_one_effective(lists[0], events)

    def _check_model(self, conn: sqlite3.Connection, events: list[Accepted]) -> None:
        assert stock_by_key(conn) == model_stock(events)
        assert tuple(queries.sales_summary(conn)) == model_sales(events)


def _check_one_effective(conflicts: list[Conflict], events: list[Accepted]) -> None:
    """Each conflict's resolution is the model's effective one, the others superseded."""
    winners = effective_resolutions(events)
    for c in conflicts:
        mine = sorted((a for a in events if isinstance(a.body, ConflictResolved)
                       and a.body.conflict == c.id),
                      key=lambda a: (a.event.hlc, a.event.origin, a.event.seq))  # fmt: skip
        if not mine:
            continue
        event("one conflict, several resolutions" if len(mine) > 1 else "one resolution")
        assert c.resolution is not None and c.resolution.event == winners[c.id].event.id
        assert [r.event for r in c.superseded] == [a.event.id for a in mine[1:]]


def _check_ids(conflicts: list[Conflict]) -> None:
    for c in conflicts:
        assert c.id == conflict_id(c.kind, c.subject, c.events, c.store)
    assert len({c.id for c in conflicts}) == len(conflicts)


Mesh.TestCase.settings = settings(
    max_examples=1000,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestMesh = Mesh.TestCase
