"""HQ holds every store's events, a till only its own store's (and HQ's): stock is kept
per store, so for each store HQ must report exactly the stock and the stock conflicts
(same ids) that the store's own tills report.

- on real EventLogs (tmp SQLite files) synced along the real topology: tills pull from
  their store's tills and from HQ, HQ pulls from every till;
- as a property: any scenario folded whole (HQ) and folded as each store's tills hold
  it (that store's events and HQ's, in any order and batching) agrees per store.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.detect import Conflict, detect
from conflict.policies import Policies
from conflict.resolve import resolve
from conflict.state import StoreState
from core.events import (
    HQ,
    ProductUpserted,
    SaleCompleted,
    StockCounted,
    StockReceived,
)
from core.fold import Accepted

from .factory import Chain, _body, apply_all, fresh_db, sale_body
from .lognet import LogNet
from .model import store

STOCK_KINDS = ("oversell", "count_during_sales")
TILLS = ("s1/t1", "s1/t2", "s2/t1", "s2/t2")
STORES = ("s1", "s2")


def _holds(replica: str, origin: str) -> bool:
    """What replicates to `replica`: everything to HQ; a store's and HQ's to a till."""
    return replica == HQ or origin == HQ or store(origin) == store(replica)


def _store_view(conn: sqlite3.Connection, s: str, policies: Policies) -> tuple[object, ...]:
    """Everything about store `s`'s stock one replica reports."""
    stock = queries.stock_by_store(conn).get(s, {})
    found = [c for c in detect(conn, policies, kinds=STOCK_KINDS) if c.store == s]
    return stock, found


# --- real logs, real topology ------------------------------------------------------------


class Site(LogNet):
    """HQ and two stores of two tills, each replica holding what the topology gives it."""

    def __init__(self) -> None:
        super().__init__((HQ, *TILLS), _holds)

    async def sync(self) -> None:
        """Every link of the topology, twice: store clusters, and each till with HQ."""
        await self.exchange(lambda a, b: HQ in (a, b) or store(a) == store(b))

    async def view(self, name: str, s: str) -> tuple[object, ...]:
        return await self.logs[name].read(lambda c: _store_view(c, s, Policies()))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site()
    await s.open(tmp_path)
    yield s
    await s.close()


async def test_hq_reports_each_stores_stock_and_conflicts_as_its_tills_do(site: Site) -> None:
    await site.do(HQ, ProductUpserted(sku="A", name="tea", price=100), 500_000)
    await site.do(HQ, StockReceived(sku="A", qty=50), 600_000)  # HQ's own stock, apart
    await site.do("s1/t1", StockReceived(sku="A", qty=2), 1_000_000)
    await site.do("s2/t1", StockReceived(sku="A", qty=5), 1_000_000)
    await site.sync()
    # Both stores sell A; store 1 sells more than it has, store 2 does not.
    await site.do("s1/t1", sale_body([("A", 2, 100)], "R1"), 2_000_000)
    s1_over = await site.do("s1/t2", sale_body([("A", 1, 100)], "R2"), 2_000_500)
    await site.do("s2/t1", sale_body([("A", 3, 100)], "R3"), 2_000_000)
    await site.do("s2/t2", StockCounted(sku="A", count=2), 2_001_000)  # during s2/t1's sale
    await site.do("s2/t2", sale_body([("B", 1, 100)], "R4"), 2_002_000)  # B never received
    await site.sync()

    for s in STORES:
        hq = await site.view(HQ, s)
        for till in (t for t in TILLS if store(t) == s):
            assert await site.view(till, s) == hq
    s1_stock, s1_found = await site.view(HQ, "s1")
    s2_stock, s2_found = await site.view(HQ, "s2")
    assert (s1_stock, s2_stock) == ({"A": -1}, {"A": 2, "B": -1})
    [over] = s1_found
    assert (over.kind, over.subject, over.events) == ("oversell", "A", [s1_over])
    assert [(c.kind, c.subject) for c in s2_found] == [("oversell", "B"),
                                                       ("count_during_sales", "A")]  # fmt: skip
    hq_all = await site.logs[HQ].read(lambda c: detect(c, Policies(), kinds=STOCK_KINDS))
    assert sorted(c.store or "" for c in hq_all) == ["s1", "s2", "s2"]  # none for HQ's own

    # Resolved on a till of store 1, it shows resolved with that id at HQ and in s1.
    await resolve(site.logs["s1/t1"], Policies(), over.id, "compensate", "ana", "found one")
    await site.sync()
    for name in (HQ, "s1/t1", "s1/t2"):
        _, [done] = await site.view(name, "s1")
        assert done.id == over.id and done.resolution is not None
        stock = await site.logs[name].read(lambda c: queries.stock_levels(c, store="s1"))
        assert stock == {"A": 0}


# --- property: any events, folded whole vs as each store holds them -------------------------

_ORIGINS = (*TILLS, HQ)


@st.composite
def _site_scenario(draw: st.DrawFn) -> list[Accepted]:
    """Events of two stores and HQ; a till voids/refunds only sales it can hold (its
    store's or HQ's), as it could not name another store's sale in practice."""
    chain, events, sales, ms = Chain(), [], [], 1_000_000
    for _ in range(draw(st.integers(0, 40))):
        ms += draw(st.sampled_from((0, 0, 1, 500, 3000, 20_000)))
        origin = draw(st.sampled_from(_ORIGINS))
        held = [sid for sid, o in sales if _holds(origin, o)]
        acc = chain.make(origin, draw(_body(held)), ms)
        if isinstance(acc.body, SaleCompleted):
            sales.append((acc.event.id, origin))
        events.append(acc)
    return events


def _fold(events: list[Accepted], cuts: list[int]) -> sqlite3.Connection:
    fold = StoreState()
    return apply_all(fold, fresh_db(fold), events, cuts)


_oversell_policies = st.sampled_from(("allow_and_report", "flag_recount"))


@settings(max_examples=200, deadline=None)
@given(data=st.data(), events=_site_scenario(), oversell=_oversell_policies)
def test_each_store_sees_its_stock_as_hq_does(
    data: st.DataObject, events: list[Accepted], oversell: str
) -> None:
    policies = Policies(oversell=oversell)  # type: ignore[arg-type]
    hq = _fold(events, [])
    try:
        for s in STORES:
            held = [a for a in events if a.event.origin == HQ or store(a.event.origin) == s]
            till = _fold(data.draw(st.permutations(held)), data.draw(st.lists(st.integers(0, 40))))
            try:
                assert _store_view(till, s, policies) == _store_view(hq, s, policies)
            finally:
                till.close()
    finally:
        hq.close()


def test_two_stores_overselling_one_sku_are_two_conflicts() -> None:
    chain = Chain()
    events = [chain.make(t, sale_body([("A", 1, 100)]), 1_000_000) for t in ("s1/t1", "s2/t1")]
    conn = _fold(events, [])
    found: list[Conflict] = detect(conn, Policies(), kinds=("oversell",))
    conn.close()
    assert [(c.store, c.subject, c.events) for c in found] == [
        ("s1", "A", ["s1/t1:1"]), ("s2", "A", ["s2/t1:1"]),
    ]  # fmt: skip
    assert found[0].id != found[1].id
