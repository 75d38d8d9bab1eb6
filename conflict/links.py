"""Voids and refunds against sales, whichever arrives first.

A void or refund names a sale by event id; replication may deliver it before the
sale. Restock needs the sale's lines, so the rules are stated on the SET of events:

- void: once the sale and at least one void are known, the sale's lines move back
  +qty at the HLC of the EARLIEST void by (hlc, origin, seq), exactly once however
  many voids exist. If an earlier void turns up later, the restock moves to its HLC
  (the old moves are removed, the new ones added), so the result is the same as if
  it had arrived first.
- refund with restock: once the refund and its sale are known, each refund line moves
  +qty of the sale line it names at the refund's HLC. A line index beyond the sale
  moves nothing (detection reports it).

Stores (`stock.stock_store`): a void's restock counts in the SALE's store - a void
cancels the sale, so its lines go back where they were sold, wherever the void was
made (a back-office void at HQ too). That also keeps the set of (store, sku) stock rows
a function of the events: moving a restock to an earlier void never moves it to another
store, so no row exists or not depending on which void arrived first. A refund's
restock counts in the REFUND's store, like any move: the goods come back where the
refund is made.

Until its sale is known, a void/refund waits in `st_waiting`. Only voids, refunds and
sales with waiting partners ever query here; a batch of plain sales costs one
`EXISTS` on an (almost always) empty table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from conflict.stock import MoveRow, add_moves, remove_moves, sale_store, store_sql
from core.events import Event, RefundIssued, SaleVoided

__all__ = ["link", "refund_moves"]

_CHUNK = 500  # well under SQLite's bound-parameter limit


def link(
    conn: sqlite3.Connection,
    new_sales: Sequence[str],
    voids: Sequence[tuple[Event, SaleVoided]],
    refunds: Sequence[tuple[Event, RefundIssued]],
) -> None:
    """Link this batch's sales, voids and refunds (all already inserted) to each other."""
    woken = _woken(conn, new_sales)
    for eids in woken.values():
        # Refunds waiting from earlier batches: their sale is here now. (This batch's
        # refunds are not in st_waiting, so none is restocked twice.)
        _restock(conn, eids)
    known = _existing_sales(conn, {b.sale for _, b in voids} | {b.sale for _, b in refunds})
    _restock(conn, [ev.id for ev, b in refunds if b.sale in known])
    _wait(conn, [(b.sale, ev.id) for ev, b in voids if b.sale not in known])
    _wait(conn, [(b.sale, ev.id) for ev, b in refunds if b.sale not in known])
    for sale_id in sorted(set(woken) | {b.sale for _, b in voids if b.sale in known}):
        _reconcile_void(conn, sale_id)


def _woken(conn: sqlite3.Connection, new_sales: Sequence[str]) -> dict[str, list[str]]:
    """Waiting voids/refunds (sale -> event ids) whose sale is in `new_sales`; unwaits them."""
    if not new_sales or not conn.execute("SELECT EXISTS (SELECT 1 FROM st_waiting)").fetchone()[0]:
        return {}
    found: dict[str, list[str]] = {}
    for chunk in _chunks(new_sales):
        sql = f"SELECT sale_id, eid FROM st_waiting WHERE sale_id IN ({_marks(chunk)})"
        for sale_id, eid in conn.execute(sql, chunk):
            found.setdefault(sale_id, []).append(eid)
    conn.executemany("DELETE FROM st_waiting WHERE sale_id = ?", [(s,) for s in found])
    return found


def _existing_sales(conn: sqlite3.Connection, sale_ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(sale_ids)):
        sql = f"SELECT id FROM st_sales WHERE id IN ({_marks(chunk)})"
        found.update(r[0] for r in conn.execute(sql, chunk))
    return found


def _wait(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    conn.executemany("INSERT OR IGNORE INTO st_waiting (sale_id, eid) VALUES (?, ?)", rows)


def _restock(conn: sqlite3.Connection, eids: Iterable[str]) -> None:
    """Restock moves of the given refunds (ids that are not refunds yield nothing)."""
    for eid in eids:
        add_moves(conn, refund_moves(conn, eid))


def refund_moves(conn: sqlite3.Connection, refund_id: str) -> list[MoveRow]:
    """The restock moves a refund implies once its sale is known (none without restock)."""
    return conn.execute(
        f"SELECT {store_sql('r.origin')}, sl.sku, r.hlc, r.eid, rl.idx, rl.qty FROM st_refunds r"
        " JOIN st_refund_lines rl ON rl.refund_id = r.eid"
        " JOIN st_sale_lines sl ON sl.sale_id = r.sale_id AND sl.line = rl.line"
        " WHERE r.eid = ? AND r.restock ORDER BY rl.idx",
        (refund_id,),
    ).fetchall()


def _reconcile_void(conn: sqlite3.Connection, sale_id: str) -> None:
    """Make the sale's restock sit at its earliest void; no-op if it already does."""
    best = conn.execute(
        "SELECT eid, hlc FROM st_voids WHERE sale_id = ? ORDER BY hlc, origin, seq LIMIT 1",
        (sale_id,),
    ).fetchone()
    cur = conn.execute(
        "SELECT void_eid, hlc FROM st_void_applied WHERE sale_id = ?", (sale_id,)
    ).fetchone()
    if best is None or (cur is not None and cur[0] == best[0]):
        return
    if cur is not None:
        remove_moves(conn, _void_moves(conn, sale_id, cur[0], cur[1]))
    add_moves(conn, _void_moves(conn, sale_id, best[0], best[1]))
    conn.execute(
        "INSERT OR REPLACE INTO st_void_applied (sale_id, void_eid, hlc) VALUES (?, ?, ?)",
        (sale_id, best[0], best[1]),
    )


def _void_moves(conn: sqlite3.Connection, sale_id: str, void_id: str, hlc: int) -> list[MoveRow]:
    """The sale's lines back in stock, in the sale's store, at the void's HLC."""
    store = sale_store(sale_id)
    rows = conn.execute(
        "SELECT line, sku, qty FROM st_sale_lines WHERE sale_id = ? ORDER BY line", (sale_id,)
    ).fetchall()
    return [(store, sku, hlc, void_id, line, qty) for line, sku, qty in rows]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(chunk: Sequence[str]) -> str:
    return ",".join("?" * len(chunk))
