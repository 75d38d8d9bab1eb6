"""Stock per SKU as a reset-counter in SQL (spec: `crdt.ResetCounter`).

Invariant kept by every function here, for every SKU with a row in `st_stock`:

    delta_after == SUM(st_moves.delta WHERE sku = s AND hlc > count_hlc)
    on_hand     == count + delta_after          (count 0, count_hlc -1 if never counted)

so on_hand depends only on the set of moves and the winning count, never on the order
they arrived in. A move at or before the count's HLC changes nothing (the count already
saw it) but is kept for a later recount. The winning count is the max by
(hlc, origin, seq): a total order, so concurrent counts resolve the same everywhere.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from tillmesh.core.events import Event, StockCounted

__all__ = [
    "MoveRow",
    "add_moves",
    "apply_counts",
    "bump_aggregated",
    "insert_moves",
    "remove_moves",
]

MoveRow = tuple[str, int, str, int, int]  # (sku, hlc, eid, line, delta): st_moves column order

_INSERT_MOVES = "INSERT INTO st_moves (sku, hlc, eid, line, delta) VALUES (?, ?, ?, ?, ?)"

# One row per SKU per batch: (sku, total delta, min hlc of the batch's moves).
# If every new move is after the count (the common case) add the total; otherwise a
# late move straddles the count, so recompute from st_moves (which already holds the
# batch's moves) - correct either way, and the slow branch is rare.
_BUMP_AGGREGATED = """
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, -1, '', 0, 0, ?2)
ON CONFLICT (sku) DO UPDATE SET delta_after = CASE
    WHEN ?3 > st_stock.count_hlc THEN st_stock.delta_after + ?2
    ELSE (SELECT COALESCE(SUM(m.delta), 0) FROM st_moves m
          WHERE m.sku = ?1 AND m.hlc > st_stock.count_hlc)
END
"""

# One move at a time (rare paths): counts iff it is after the SKU's count.
_BUMP_ONE = """
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, -1, '', 0, 0, ?2)
ON CONFLICT (sku) DO UPDATE SET delta_after = st_stock.delta_after
    + CASE WHEN ?3 > st_stock.count_hlc THEN ?2 ELSE 0 END
"""

_SET_COUNT = """
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (sku) DO UPDATE SET count_hlc = ?2, count_origin = ?3, count_seq = ?4,
    count = ?5, delta_after = ?6
"""


def insert_moves(conn: sqlite3.Connection, moves: Sequence[MoveRow]) -> None:
    """Store moves WITHOUT touching st_stock: pair with `bump_aggregated`."""
    conn.executemany(_INSERT_MOVES, moves)


def bump_aggregated(conn: sqlite3.Connection, agg: dict[str, list[int]]) -> None:
    """Apply per-SKU [total, min_hlc] of moves already inserted by `insert_moves`."""
    conn.executemany(_BUMP_AGGREGATED, [(sku, t, h) for sku, (t, h) in agg.items()])


def add_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Insert moves and keep the invariant, one move at a time (for rare events)."""
    rows = list(moves)
    conn.executemany(_INSERT_MOVES, rows)
    conn.executemany(_BUMP_ONE, [(sku, delta, hlc) for sku, hlc, _, _, delta in rows])


def remove_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Undo `add_moves` exactly (used when an earlier void takes over a sale's restock)."""
    rows = list(moves)
    conn.executemany(
        "DELETE FROM st_moves WHERE sku = ? AND hlc = ? AND eid = ? AND line = ?",
        [r[:4] for r in rows],
    )
    conn.executemany(_BUMP_ONE, [(sku, -delta, hlc) for sku, hlc, _, _, delta in rows])


def apply_counts(conn: sqlite3.Connection, counts: Sequence[tuple[Event, StockCounted]]) -> None:
    """Record every count; a count that beats the SKU's current one resets it.

    Counts are rare, so a SELECT and a SUM per count are fine here.
    """
    conn.executemany(
        "INSERT INTO st_counts (eid, sku, hlc, origin, seq, count) VALUES (?, ?, ?, ?, ?, ?)",
        [(ev.id, b.sku, ev.hlc, ev.origin, ev.seq, b.count) for ev, b in counts],
    )
    for ev, body in counts:
        if _beats_current(conn, body.sku, (ev.hlc, ev.origin, ev.seq)):
            _reset(conn, ev, body)


def _beats_current(conn: sqlite3.Connection, sku: str, key: tuple[int, str, int]) -> bool:
    row = conn.execute(
        "SELECT count_hlc, count_origin, count_seq FROM st_stock WHERE sku = ?", (sku,)
    ).fetchone()
    return row is None or key > tuple(row)


def _reset(conn: sqlite3.Connection, ev: Event, body: StockCounted) -> None:
    (after,) = conn.execute(
        "SELECT COALESCE(SUM(delta), 0) FROM st_moves WHERE sku = ? AND hlc > ?",
        (body.sku, ev.hlc),
    ).fetchone()
    conn.execute(_SET_COUNT, (body.sku, ev.hlc, ev.origin, ev.seq, body.count, after))
