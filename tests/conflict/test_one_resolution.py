"""One effective resolution per conflict (issue 21), focused: an oversell, an over-refund
and a concurrent price, each resolved by managers at two or three replicas that cannot
see each other's decisions, with drawn actions and clocks; then every replica takes
the others' events in a drawn order and batching.

Every replica ends with one digest; each conflict's effective resolution is the
earliest by (hlc, origin, seq), the others listed as superseded; stock equals the
model that applies the effective resolution's effects only, and money the plain sums.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.detect import detect
from conflict.errors import ConflictError
from conflict.policies import Policies
from conflict.resolve import ACTIONS, resolution_bodies
from conflict.state import StoreState
from core.events import (
    HQ,
    ConflictResolved,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    StockReceived,
)
from core.fold import Accepted

from .factory import Chain, apply_all, fresh_db, sale_body, stock_by_key
from .model import effective_resolutions, model_sales, model_stock

TILLS = ("s1/t1", "s1/t2", "s1/t3")


def _history(chain: Chain) -> list[Accepted]:
    """Events every replica holds before the partition: the conflicts to resolve."""
    ms = 1_000_000
    out = [chain.make(HQ, ProductUpserted(sku="A", name="a", price=100), ms)]
    out.append(chain.make("s1/t1", StockReceived(sku="A", qty=1), ms + 1))
    sale = chain.make("s1/t1", sale_body([("A", 2, 100)], "R1"), ms + 2)
    out += [sale, chain.make("s1/t2", sale_body([("A", 1, 100)], "R2"), ms + 3)]
    refund = RefundIssued(sale=sale.event.id, lines=[RefundLine(line=0, qty=2, amount=200)])
    out += [chain.make(t, refund, ms + 4) for t in ("s1/t2", "s1/t3")]
    out += [chain.make(t, PriceSet(sku="A", price=p), ms + 5) for t, p in (("s1/t1", 90),
            ("s1/t3", 80))]  # fmt: skip
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_concurrent_resolutions_one_effective_each(data: st.DataObject) -> None:
    policies = Policies(oversell=data.draw(st.sampled_from(("allow_and_report", "flag_recount"))))
    fold = StoreState()
    chain = Chain()
    shared = _history(chain)
    reps = [apply_all(fold, fresh_db(fold), shared) for _ in TILLS]
    held = [list(shared) for _ in TILLS]
    for i, till in enumerate(TILLS):  # each side of the partition decides alone
        ms = 2_000_000 + data.draw(st.sampled_from((0, 0, 1, 5_000)))
        for c in detect(reps[i], policies, open_only=True):
            if not data.draw(st.booleans()):
                continue
            action = data.draw(st.sampled_from(ACTIONS[c.kind]))
            price = data.draw(st.integers(0, 99)) if action == "choose_price" else None
            count = data.draw(st.none() | st.integers(0, 9)) if action == "recount" else None
            try:
                bodies = resolution_bodies(reps[i], c, action, till, "r", author=till,
                                           price=price, count=count)  # fmt: skip
            except ConflictError:
                bodies = resolution_bodies(reps[i], c, "accept", till, "r", author=till)
            made = [chain.make(till, b, ms) for b in bodies]
            apply_all(fold, reps[i], made)
            held[i] += made
    every = {a.event.id: a for h in held for a in h}
    for i in range(len(TILLS)):  # the heal: each takes what it lacks, in any order
        have = {a.event.id for a in held[i]}
        missing = data.draw(st.permutations([a for e, a in sorted(every.items()) if e not in have]))
        apply_all(fold, reps[i], missing, data.draw(st.lists(st.integers(0, 9), max_size=3)))
    events = list(every.values())
    assert len({queries.state_digest(r) for r in reps}) == 1
    assert stock_by_key(reps[0]) == model_stock(events)
    assert tuple(queries.sales_summary(reps[0])) == model_sales(events)
    winners = effective_resolutions(events)
    for c in detect(reps[0], policies):
        mine = sorted((a for a in events if isinstance(a.body, ConflictResolved)
                       and a.body.conflict == c.id),
                      key=lambda a: (a.event.hlc, a.event.origin, a.event.seq))  # fmt: skip
        if mine:
            assert c.resolution is not None and c.resolution.event == winners[c.id].event.id
            assert [r.event for r in c.superseded] == [a.event.id for a in mine[1:]]
    product = queries.product(reps[0], "A")
    assert product is not None
    chosen = [a for a in winners.values() if a.body.action == "choose_price"]  # type: ignore[attr-defined]
    if chosen:  # a winning choice is a write at its HLC; a superseded one is not
        applied = {r[0] for r in reps[0].execute("SELECT eid FROM st_catalog_writes")}
        assert {a.event.id for a in chosen} <= applied
    losers = {a.event.id for a in events if isinstance(a.body, ConflictResolved)} - {
        a.event.id for a in winners.values()}  # fmt: skip
    assert not losers & {r[0] for r in reps[0].execute("SELECT eid FROM st_catalog_writes")}
    assert not losers & {r[0] for r in reps[0].execute("SELECT eid FROM st_moves")}
