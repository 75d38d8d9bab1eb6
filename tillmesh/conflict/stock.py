"""Stock per SKU as a reset-counter in SQL (spec: `crdt.ResetCounter`).

Invariant kept by every function here, for every SKU with a row in `st_stock`:

    delta_after == SUM(delta of moves WHERE sku = s AND hlc > count_hlc)
    on_hand     == count + delta_after          (count 0, count_hlc -1 if never counted)

where the moves are st_moves plus the sale lines in st_sales (view st_all_moves), so
on_hand depends only on the set of moves and the winning count, never on the order
they arrived in. A move at or before the count's HLC changes nothing (the count
already saw it) but is kept for a later recount. The winning count is the max by
(hlc, origin, seq): a total order, so concurrent counts resolve the same everywhere.

`st_buckets` holds every move's delta summed per (sku, minute of HLC wall time): a
recount = whole minutes after the count from st_buckets + the count's own minute move
by move. Buckets are plain sums, so they too are order-free.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from tillmesh.core.clock import COUNTER_BITS
from tillmesh.core.events import Event, StockCounted

__all__ = [
    "BUCKET_MS",
    "MoveRow",
    "add_moves",
    "apply_counts",
    "bucket_of",
    "bump_aggregated",
    "bump_buckets",
    "remove_moves",
]

MoveRow = tuple[str, int, str, int, int]  # (sku, hlc, eid, line, delta): st_moves column order

BUCKET_MS = 60_000
_HLC_PER_BUCKET = BUCKET_MS << COUNTER_BITS  # hlc // this == bucket (HLC is ms << 16 | n)


def bucket_of(hlc: int) -> int:
    return hlc // _HLC_PER_BUCKET


def _recount(sku: str, after: str) -> str:
    """SQL for SUM(delta of all moves of `sku` with hlc > `after`) (both SQL expressions)."""
    b = f"({after} / {_HLC_PER_BUCKET})"
    end = f"(({b} + 1) * {_HLC_PER_BUCKET})"
    return f"""(
    (SELECT COALESCE(SUM(k.delta), 0) FROM st_buckets k WHERE k.sku = {sku} AND k.bucket > {b})
  + (SELECT COALESCE(SUM(m.delta), 0) FROM st_moves m
     WHERE m.sku = {sku} AND m.hlc > {after} AND m.hlc < {end})
  + (SELECT COALESCE(SUM(-(j.value ->> '$.qty')), 0) FROM st_sales x, json_each(x.lines) j
     WHERE x.hlc > {after} AND x.hlc < {end} AND j.value ->> '$.sku' = {sku}))"""


_INSERT_MOVES = "INSERT INTO st_moves (sku, hlc, eid, line, delta) VALUES (?, ?, ?, ?, ?)"

_BUMP_BUCKET = """
INSERT INTO st_buckets (sku, bucket, delta) VALUES (?, ?, ?)
ON CONFLICT (sku, bucket) DO UPDATE SET delta = st_buckets.delta + excluded.delta
"""

# One row per SKU per batch: (sku, total delta, min hlc of the batch's moves).
# If every new move is after the count (the common case) add the total; otherwise a
# late move straddles the count, so recount (the batch's moves are already stored) -
# correct either way, and the slow branch is rare.
_BUMP_AGGREGATED = f"""
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, -1, '', 0, 0, ?2)
ON CONFLICT (sku) DO UPDATE SET delta_after = CASE
    WHEN ?3 > st_stock.count_hlc THEN st_stock.delta_after + ?2
    ELSE {_recount("?1", "st_stock.count_hlc")}
END
"""

# One move at a time (rare paths): counts iff it is after the SKU's count.
_BUMP_ONE = """
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, -1, '', 0, 0, ?2)
ON CONFLICT (sku) DO UPDATE SET delta_after = st_stock.delta_after
    + CASE WHEN ?3 > st_stock.count_hlc THEN ?2 ELSE 0 END
"""

_SET_COUNT = f"""
INSERT INTO st_stock (sku, count_hlc, count_origin, count_seq, count, delta_after)
VALUES (?1, ?2, ?3, ?4, ?5, {_recount("?1", "?2")})
ON CONFLICT (sku) DO UPDATE SET count_hlc = ?2, count_origin = ?3, count_seq = ?4,
    count = ?5, delta_after = excluded.delta_after
"""


def bump_buckets(conn: sqlite3.Connection, buckets: dict[tuple[str, int], int]) -> None:
    """Add per-(sku, bucket) sums of new moves; call before anything may recount."""
    conn.executemany(_BUMP_BUCKET, [(sku, b, d) for (sku, b), d in buckets.items()])


def bump_aggregated(conn: sqlite3.Connection, agg: dict[str, list[int]]) -> None:
    """Apply per-SKU [total, min_hlc] of moves already stored (rows and buckets)."""
    conn.executemany(_BUMP_AGGREGATED, [(sku, t, h) for sku, (t, h) in agg.items()])


def _store(conn: sqlite3.Connection, rows: list[MoveRow], sign: int) -> None:
    conn.executemany(_BUMP_BUCKET, [(r[0], bucket_of(r[1]), sign * r[4]) for r in rows])
    conn.executemany(_BUMP_ONE, [(sku, sign * d, hlc) for sku, hlc, _, _, d in rows])


def add_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Insert non-sale moves and keep the invariant, one move at a time (rare events)."""
    rows = list(moves)
    conn.executemany(_INSERT_MOVES, rows)
    _store(conn, rows, 1)


def remove_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Undo `add_moves` exactly (used when an earlier void takes over a sale's restock)."""
    rows = list(moves)
    conn.executemany(
        "DELETE FROM st_moves WHERE sku = ? AND hlc = ? AND eid = ? AND line = ?",
        [r[:4] for r in rows],
    )
    _store(conn, rows, -1)


def apply_counts(conn: sqlite3.Connection, counts: Sequence[tuple[Event, StockCounted]]) -> None:
    """Record every count; a count that beats the SKU's current one resets it.

    Counts are rare, so a SELECT and a recount per count are fine here.
    """
    conn.executemany(
        "INSERT INTO st_counts (eid, sku, hlc, origin, seq, count) VALUES (?, ?, ?, ?, ?, ?)",
        [(ev.id, b.sku, ev.hlc, ev.origin, ev.seq, b.count) for ev, b in counts],
    )
    for ev, body in counts:
        if _beats_current(conn, body.sku, (ev.hlc, ev.origin, ev.seq)):
            conn.execute(_SET_COUNT, (body.sku, ev.hlc, ev.origin, ev.seq, body.count))


def _beats_current(conn: sqlite3.Connection, sku: str, key: tuple[int, str, int]) -> bool:
    row = conn.execute(
        "SELECT count_hlc, count_origin, count_seq FROM st_stock WHERE sku = ?", (sku,)
    ).fetchone()
    return row is None or key > tuple(row)
