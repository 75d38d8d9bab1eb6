"""A conflict's resolution changes HQ's figures on PostgreSQL as it does on SQLite.

The SQLite fold applies what the effective resolution of each conflict (the earliest
by (hlc, origin)) does: a `supersede` takes catalog writes out of their SKU (HQ's any,
a till's its own store's only), `choose_price` is a price write, `compensate` stock
moves and `recount` a count in the resolver's store (`conflict.effects`). Fed the same
events in any interleaving of the origins and any batches, HQ on PostgreSQL must give
the same catalog, store prices and stock as the SQLite HQ.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict.conflicts import conflict_id
from core.events import (
    Body,
    ConflictResolved,
    PriceSet,
    ProductUpserted,
    ResolvedMove,
    StockReceived,
)
from core.fold import FLAG_UNAPPLIED, Accepted
from replicas.hq import reports as pg_reports
from replicas.hq.store import PgLog
from tests.conflict.factory import Chain, sale_body
from tests.replicas.hq.pg_kit import figures, on_one_database, reset, through_both

MS = 1_000_000
AHEAD = MS + 50_000_000  # a write dated far ahead by a wrong clock


def _supersede(sku: str, *eids: str) -> ConflictResolved:
    cid = conflict_id("catalog_override", sku, list(eids))
    return ConflictResolved(conflict=cid, action="supersede", by="ana", supersedes=list(eids))


def _pick(conflict: str, action: str, **effect: object) -> ConflictResolved:
    return ConflictResolved(conflict=conflict, action=action, by="ana", **effect)  # type: ignore[arg-type]


# (origin, body, ms): each origin's events in its own order (seq and HLC increase)
STORY: list[tuple[str, Body, int]] = [
    ("hq", ProductUpserted(sku="A", name="tea", price=100, tax_rate_bp=0), MS),
    ("hq", ProductUpserted(sku="B", name="coffee", price=200, tax_rate_bp=0), MS),
    ("hq", ProductUpserted(sku="C", name="cake", price=300, tax_rate_bp=0), MS),
    ("hq", PriceSet(sku="A", price=999), AHEAD),  # hq:4, superseded by hq:5
    ("hq", _supersede("A", "hq:4"), MS),
    ("hq", _pick("cp2", "choose_price", sku="B", price=250), MS),  # after t1's: loses
    ("hq", _pick("rc1", "recount", sku="C", count=4), MS),  # dated after s2/t1's: loses
    ("s1/t1", PriceSet(sku="A", price=150), MS + 10),  # s1's own price of A
    ("s1/t1", sale_body([("A", 2, 150), ("B", 1, 200)], "R1"), MS + 30),
    ("s1/t1", _supersede("B", "s1/t2:1"), MS + 40),  # its store's write: taken out
    ("s1/t1", _pick("ov1", "compensate", moves=[ResolvedMove(sku="A", delta=5)]), MS + 90),
    ("s1/t1", _pick("cp2", "choose_price", sku="B", price=260), MS + 300),  # wins cp2
    ("s1/t2", PriceSet(sku="B", price=170), MS + 20),  # s1/t2:1
    ("s1/t2", _pick("ov1", "compensate", moves=[ResolvedMove(sku="A", delta=3)]), MS + 100),
    ("s2/t1", StockReceived(sku="C", qty=10), MS + 40),
    ("s2/t1", _supersede("A", "s1/t1:1"), MS + 50),  # another store's write: no effect
    ("s2/t1", _pick("cp1", "choose_price", sku="C", price=321), MS + 200),  # s2's price
    ("s2/t1", _pick("rc1", "recount", sku="C", count=7), MS + 400),
    ("s2/t1", sale_body([("C", 1, 321)], "R2"), MS + 500),
    ("s2/t1", _pick("rc1", "recount", sku="C", count=9), MS + 600),  # later: loses
]


def _events(order: list[int]) -> list[Accepted]:
    """STORY with the origins interleaved as `order` says (each origin's own order kept:
    position i takes the next event of the origin of STORY[order[i]])."""
    left: dict[str, list[tuple[str, Body, int]]] = {}
    for item in STORY:
        left.setdefault(item[0], []).append(item)
    chain, out = Chain(), []
    for i in order:
        origin, body, ms = left[STORY[i][0]].pop(0)
        out.append(chain.make(origin, body, ms))
    return out


def _resolutions_equal(order: list[int], cuts: list[int], dsn: str, tmp_path: Path) -> None:
    reset(dsn)
    db = tmp_path / f"hq-{len(list(tmp_path.iterdir()))}.db"
    on_sqlite, on_pg = asyncio.run(through_both(_events(order), cuts, db, dsn))
    for name, rows in on_sqlite.items():
        assert on_pg[name] == rows, name
    # and they say what the story did (equal but empty reports would pass the above)
    chain = {p["sku"]: p["price"] for p in on_pg["catalog"]}
    assert chain == {"A": 100, "B": 200, "C": 300}  # hq:4 superseded; cp2 by s1's price
    store = {(p["store"], p["sku"]): p["store_price"] for p in on_pg["prices"]}
    assert store == {("s1", "A"): 150, ("s1", "B"): 260, ("s2", "C"): 321}
    stock = {(r["store"], r["sku"]): r["on_hand"] for r in on_pg["stock"]}
    assert stock[("s1", "A")] == -2 + 5  # the earlier compensation (t1's) wins
    assert stock[("s2", "C")] == 7 - 1  # the earliest recount, then a sale
    assert ("hq", "C") not in stock  # HQ's recount came later: never applied


INTERLEAVINGS = given(
    order=st.permutations(range(len(STORY))),
    cuts=st.lists(st.integers(0, len(STORY)), max_size=4),
)


@on_one_database(15)
@INTERLEAVINGS
def test_resolutions_change_catalog_prices_and_stock_as_on_sqlite(
    order: list[int], cuts: list[int], pg_dsn: str, tmp_path: Path
) -> None:
    _resolutions_equal(order, cuts, pg_dsn, tmp_path)


@pytest.mark.soak
@on_one_database(150)
@INTERLEAVINGS
def test_resolutions_change_catalog_prices_and_stock_as_on_sqlite_in_many_orders(
    order: list[int], cuts: list[int], pg_dsn: str, tmp_path: Path
) -> None:
    _resolutions_equal(order, cuts, pg_dsn, tmp_path)


def test_resolutions_stored_before_their_effects_were_read_are_applied_at_open(
    pg_dsn: str, tmp_path: Path
) -> None:
    """A database of schema 4 kept resolutions without their effects; migration 5 drops
    their rows and flags them unapplied, and opening HQ applies them again (`upgrade.py`):
    the figures are then those of a database that always read them."""
    on_sqlite, on_pg = asyncio.run(
        through_both(_events(list(range(len(STORY)))), [7], tmp_path / "hq.db", pg_dsn)
    )
    with psycopg.connect(pg_dsn) as conn:  # what migration 5 leaves of a schema-4 database
        conn.execute("TRUNCATE hq_resolution_effects, hq_superseded, hq_resolutions")
        conn.execute(
            f"UPDATE hq_events SET flags = flags | {FLAG_UNAPPLIED}"
            " WHERE type = 'conflict.resolved'"
        )
        assert figures(conn, pg_reports)["stock"] != on_pg["stock"]  # no compensation now

    async def reopen() -> None:
        async with await PgLog.open(pg_dsn):
            pass

    asyncio.run(reopen())
    with psycopg.connect(pg_dsn) as conn:
        again = figures(conn, pg_reports)
        unapplied = conn.execute(
            f"SELECT count(*) FROM hq_events WHERE flags & {FLAG_UNAPPLIED} <> 0"
        ).fetchone()
    assert unapplied == (0,)
    for name, rows in again.items():
        assert rows == on_sqlite[name], name
