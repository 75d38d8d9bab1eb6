"""One effective resolution per conflict: the earliest; only its effects are state.

Two managers on two sides of a partition may both resolve one conflict. Every
`conflict.resolved` is kept (`st_resolutions`, with what it would do in `st_effects`),
and per conflict id one is effective: the earliest by (hlc, origin) - an origin's HLCs
strictly increase, so that order is total, and the same at every replica whatever
arrived first. The others are superseded: listed with who, when and what they would
have done (`detect`), never applied.

Effects (schema 5, in the resolution's body): stock moves (a compensation) in the
store of the resolution's author, a count of a SKU there (a recount), a price of a SKU
(choose_price, a catalog write). `st_applied` names, per conflict, the resolution
whose effects are in the state, if it has any; when an earlier resolution turns up,
the applied one's effects are taken out and the new winner's put in, as `links.py`
moves a void's restock to an earlier void. So the state is a function of the set of
events. Resolutions written before schema 5 carry no effects: their compensating
events (`stock.adjusted`, `stock.counted`, `price.set` appended after them) are plain
events and apply whichever resolution wins, as they always did.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from conflict import stock
from conflict.stock import stock_store
from core.events import ConflictResolved, Event, parse_event_id

__all__ = ["EffectRow", "effect_rows", "settle"]

# (resolution eid, idx, kind 'move' | 'count' | 'price', store, sku, n): st_effects
EffectRow = tuple[str, int, str, str, str, int]


def effect_rows(ev: Event, body: ConflictResolved) -> list[EffectRow]:
    """What `body` does if it is effective, as rows (none for a pre-schema-5 one)."""
    store = stock_store(ev.origin)
    rows: list[EffectRow] = [
        (ev.id, i, "move", store, m.sku, m.delta) for i, m in enumerate(body.moves)
    ]
    if body.sku is not None and body.count is not None:
        rows.append((ev.id, len(rows), "count", store, body.sku, body.count))
    if body.sku is not None and body.action == "choose_price" and body.price is not None:
        rows.append((ev.id, len(rows), "price", store, body.sku, body.price))
    return rows


_WINNER = "SELECT eid FROM st_resolutions WHERE conflict = ? ORDER BY hlc, origin LIMIT 1"


def settle(conn: sqlite3.Connection, conflicts: Iterable[str]) -> set[str]:
    """Make each conflict's earliest resolution the applied one; the SKUs whose catalog
    writes changed (to recompute)."""
    skus: set[str] = set()
    for cid in sorted(set(conflicts)):
        (winner,) = conn.execute(_WINNER, (cid,)).fetchone()
        has = conn.execute("SELECT 1 FROM st_effects WHERE eid = ?", (winner,)).fetchone()
        target = winner if has else None
        row = conn.execute("SELECT eid FROM st_applied WHERE conflict = ?", (cid,)).fetchone()
        applied = None if row is None else row[0]
        if applied == target:
            continue
        if applied is not None:
            skus |= _undo(conn, applied)
            conn.execute("DELETE FROM st_applied WHERE conflict = ?", (cid,))
        if target is not None:
            skus |= _do(conn, target)
            conn.execute("INSERT INTO st_applied VALUES (?, ?)", (cid, target))
    return skus


def _effects(conn: sqlite3.Connection, eid: str) -> tuple[int, str, list[EffectRow]]:
    hlc, origin = conn.execute(
        "SELECT hlc, origin FROM st_resolutions WHERE eid = ?", (eid,)
    ).fetchone()
    rows = conn.execute(
        "SELECT eid, idx, kind, store, sku, n FROM st_effects WHERE eid = ? ORDER BY idx", (eid,)
    ).fetchall()
    return hlc, origin, rows


_PRICE_WRITE = "INSERT INTO st_catalog_writes VALUES (?, ?, ?, ?, ?, 'price', NULL, ?, NULL, NULL)"


def _do(conn: sqlite3.Connection, eid: str) -> set[str]:
    hlc, origin, rows = _effects(conn, eid)
    seq = parse_event_id(eid)[1]
    skus: set[str] = set()
    for _, idx, kind, store, sku, n in rows:
        if kind == "move":
            stock.add_moves(conn, [(store, sku, hlc, eid, idx, n)])
        elif kind == "count":
            stock.add_count(conn, (eid, store, sku, hlc, origin, seq, n))
        else:
            conn.execute(_PRICE_WRITE, (eid, sku, hlc, origin, seq, n))
            skus.add(sku)
    return skus


def _undo(conn: sqlite3.Connection, eid: str) -> set[str]:
    hlc, _, rows = _effects(conn, eid)
    skus: set[str] = set()
    for _, idx, kind, store, sku, n in rows:
        if kind == "move":
            stock.remove_moves(conn, [(store, sku, hlc, eid, idx, n)])
        elif kind == "count":
            stock.remove_count(conn, eid)
        else:
            conn.execute("DELETE FROM st_catalog_writes WHERE eid = ?", (eid,))
            skus.add(sku)
        if kind != "price":
            stock.forget_if_unmoved(conn, store, sku)
    return skus
