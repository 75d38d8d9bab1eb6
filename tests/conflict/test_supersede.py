"""A catalog override: a `supersede` resolution takes the writes it names out of the
catalog whatever their HLC, at every replica, in any arrival order.

Property: catalog writes of three origins (some dated years ahead) and supersede
resolutions (from HQ, and from tills naming writes of any origin) applied in any order,
any batching, with duplicates, give one digest; the effective catalog is the model's
over the writes no permitted resolution superseded, so a superseded write never wins.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.catalog import may_supersede
from conflict.detect import detect
from conflict.policies import Policies
from conflict.resolve import override_conflict
from conflict.state import StoreState
from core.events import HQ, ConflictResolved, PriceSet, ProductUpserted
from core.fold import Accepted

from .factory import Chain, apply_all, fresh_db
from .model import model_catalog

ORIGINS = (HQ, "s1/t1", "s1/t2", "s2/t1")
YEAR_MS = 365 * 86_400_000
_policies = st.sampled_from(("latest", "hq_wins", "lowest"))


@st.composite
def _history(draw: st.DrawFn) -> list[Accepted]:
    chain, events, ms = Chain(), [], 1_000_000
    writes: list[Accepted] = []
    for _ in range(draw(st.integers(1, 14))):
        ms += draw(st.sampled_from((0, 1, 2_000, 60_000)))
        ahead = draw(st.sampled_from((0, 0, 0, 10 * YEAR_MS)))  # a skewed clock, now and then
        if writes and draw(st.integers(0, 3)) == 0:
            named = draw(st.lists(st.sampled_from(writes), min_size=1, max_size=3, unique_by=id))
            ids = sorted({w.event.id for w in named})
            body = ConflictResolved(conflict="c", action="supersede", by="mgr", supersedes=ids)
            origin = draw(st.sampled_from(ORIGINS))
        else:
            sku = draw(st.sampled_from(("A", "B")))
            origin = draw(st.sampled_from(ORIGINS))
            price = draw(st.integers(0, 999))
            if origin == HQ and draw(st.booleans()):
                body = ProductUpserted(sku=sku, name="n", price=price, active=draw(st.booleans()))
            else:
                body = PriceSet(sku=sku, price=price)  # type: ignore[assignment]
        acc = chain.make(origin, body, ms + ahead)
        events.append(acc)
        if not isinstance(body, ConflictResolved):
            writes.append(acc)
    return events


def _out(events: list[Accepted]) -> set[str]:
    """Ids of the writes a permitted resolution supersedes (the spec, in Python)."""
    origin_of = {a.event.id: a.event.origin for a in events}
    return {
        eid
        for a in events
        if isinstance(a.body, ConflictResolved)
        for eid in a.body.supersedes
        if eid in origin_of and may_supersede(a.event.origin, origin_of[eid])
    }


@settings(max_examples=300, deadline=None)
@given(
    events=_history(),
    policy=_policies,
    order=st.randoms(use_true_random=False),
    cuts=st.lists(st.integers(0, 30), max_size=4),
    dups=st.lists(st.integers(0, 30), max_size=4),
)
def test_any_order_same_digest_and_superseded_writes_lose(
    events: list[Accepted], policy: str, order: object, cuts: list[int], dups: list[int]
) -> None:
    fold = StoreState(policy)  # type: ignore[arg-type]
    in_order = apply_all(fold, fresh_db(fold), events)
    shuffled = list(events) + [events[i % len(events)] for i in dups]
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    mixed = apply_all(fold, fresh_db(fold), shuffled, cuts)
    assert queries.state_digest(in_order) == queries.state_digest(mixed)

    out = _out(events)
    kept = [a for a in events if a.event.id not in out]
    for at in (None, "s1", "s2"):  # the chain's catalog, and as each store sells
        want = model_catalog(kept, policy, fold.window_ms, at)
        got = {p["sku"]: (p["name"], p["price"], p["tax_rate_bp"], int(p["active"]))
               for p in queries.catalog(mixed, at)}  # fmt: skip
        assert got == want, at
    effective = {r for row in mixed.execute("SELECT product_eid, price_eid FROM st_products")
                 for r in row} | {r for (r,) in mixed.execute(
                     "SELECT price_eid FROM st_store_prices")}  # fmt: skip
    assert not effective & out
    policies = Policies(price=policy)  # type: ignore[arg-type]
    assert detect(in_order, policies) == detect(mixed, policies)


def test_a_write_dated_ten_years_ahead_loses_to_the_override_only() -> None:
    """The reported case in the fold: HQ's later write loses to one dated far ahead
    until a resolution supersedes that one; a till of another store cannot."""
    chain, fold = Chain(), StoreState()
    base = chain.make(HQ, ProductUpserted(sku="B2", name="Bread", price=300), 1_000_000)
    ahead = chain.make(HQ, ProductUpserted(sku="B2", name="Bread", price=300, active=False),
                       1_000_000 + 10 * YEAR_MS)  # fmt: skip
    conn = apply_all(fold, fresh_db(fold), [base, ahead])
    later = Chain()  # HQ's replacement machine, its clock right (seqs carry on)
    later.heads = {HQ: (2, chain.heads[HQ][1], 2_000_000 << 16)}
    fix = later.make(HQ, ProductUpserted(sku="B2", name="Bread", price=300, active=True), 2_000)
    apply_all(fold, conn, [fix])
    assert queries.product(conn, "B2")["active"] is False  # type: ignore[index]

    foreign = Chain().make("s2/t1", ConflictResolved(
        conflict="c", action="supersede", by="x", supersedes=[ahead.event.id]), 3_000)  # fmt: skip
    apply_all(fold, conn, [foreign])
    assert queries.product(conn, "B2")["active"] is False  # type: ignore[index]

    conflict = override_conflict(conn, "B2", [ahead.event.id], HQ)
    body = ConflictResolved(conflict=conflict.id, action="supersede", by="ana",
                            reason="dated 2036", supersedes=conflict.events)  # fmt: skip
    apply_all(fold, conn, [later.make(HQ, body, 3_000)])
    assert queries.product(conn, "B2")["active"] is True  # type: ignore[index]
    (listed,) = detect(conn, Policies(), kinds=["catalog_override"])
    assert listed.id == conflict.id and listed.resolution is not None
    assert listed.resolution.by == "ana" and listed.events == [ahead.event.id]
