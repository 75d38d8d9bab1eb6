"""Stock per (store, SKU) as a reset-counter in SQL (spec: `crdt.ResetCounter`).

Stock belongs to a store: a move counts in the store of the event that makes it
(`stock_store(origin)`: `s1/t2` -> `s1`; HQ's own events keep a stock of their own,
store "hq"), except a void's restock, which goes back to the sale's store (`links.py`).
That is what makes HQ, which holds every store's events, report for each store exactly
the stock the store's tills report: a till holds its store's events (and HQ's), so its
rows for its store are built from the same events as HQ's rows.

Invariant kept by every function here, for every (store, sku) with a row in `st_stock`:

    delta_after == SUM(delta of the store's moves of sku WHERE hlc > count_hlc)
    on_hand     == count + delta_after          (count 0, count_hlc -1 if never counted)

where the moves are st_moves plus the sale lines in st_sales (view st_all_moves), so
on_hand depends only on the set of moves and the winning count, never on the order
they arrived in. A move at or before the count's HLC changes nothing (the count
already saw it) but is kept for a later recount. The winning count is the max by
(hlc, origin, seq) among the store's counts of the SKU: a total order, so concurrent
counts resolve the same everywhere.

`st_buckets` holds every move's delta summed per (store, sku, minute of HLC wall time):
a recount = whole minutes after the count from st_buckets + the count's own minute move
by move. Buckets are plain sums, so they too are order-free.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from core.clock import COUNTER_BITS
from core.events import Body, Event, SaleVoided, StockCounted, parse_event_id

__all__ = [
    "BUCKET_MS",
    "HLC_PER_BUCKET",
    "Aggregated",
    "Buckets",
    "CountRow",
    "MoveRow",
    "add_count",
    "add_moves",
    "apply_counts",
    "bucket_of",
    "bump_aggregated",
    "bump_buckets",
    "forget_if_unmoved",
    "recount_sql",
    "remove_count",
    "remove_moves",
    "sale_store",
    "stock_store",
    "store_moved_by",
    "store_sql",
]

# (store, sku, hlc, eid, line, delta): st_moves column order
MoveRow = tuple[str, str, int, str, int, int]
Aggregated = dict[str, dict[str, list[int]]]  # store -> sku -> [total delta, min hlc]
Buckets = dict[str, dict[tuple[str, int], int]]  # store -> (sku, bucket) -> delta

BUCKET_MS = 60_000
HLC_PER_BUCKET = BUCKET_MS << COUNTER_BITS  # hlc // this == bucket (HLC is ms << 16 | n)


def stock_store(origin: str) -> str:
    """The store whose stock an event of `origin` moves: `s1/t2` -> `s1`, `hq` -> `hq`.

    Equal to `core.events.store_of(origin) or HQ` (a store may not be called "hq"),
    written as one `partition` because the fold calls it per event.
    """
    return origin.partition("/")[0]


def sale_store(sale_id: str) -> str:
    """The store whose stock a sale moves, and so where a void of it restocks."""
    return stock_store(parse_event_id(sale_id)[0])


def store_moved_by(ev: Event, body: Body | None) -> str:
    """The store whose stock `ev` moves: its origin's, but a void restocks the sale's."""
    return sale_store(body.sale) if isinstance(body, SaleVoided) else stock_store(ev.origin)


def store_sql(origin_col: str) -> str:
    """SQL for `stock_store(<origin_col>)` (sale lines have no store column: st_sales
    rows stay as narrow as ingest wants them, and the store is a function of origin)."""
    return f"substr({origin_col}, 1, instr({origin_col} || '/', '/') - 1)"


def bucket_of(hlc: int) -> int:
    return hlc // HLC_PER_BUCKET


def recount_sql(store: str, sku: str, after: str) -> str:
    """SQL for SUM(delta of the store's moves of `sku` with hlc > `after`) (SQL exprs)."""
    b = f"({after} / {HLC_PER_BUCKET})"
    end = f"(({b} + 1) * {HLC_PER_BUCKET})"
    return f"""(
    (SELECT COALESCE(SUM(k.delta), 0) FROM st_buckets k
     WHERE k.store = {store} AND k.sku = {sku} AND k.bucket > {b})
  + (SELECT COALESCE(SUM(m.delta), 0) FROM st_moves m
     WHERE m.store = {store} AND m.sku = {sku} AND m.hlc > {after} AND m.hlc < {end})
  + (SELECT COALESCE(SUM(-(j.value ->> '$.qty')), 0) FROM st_sales x, json_each(x.lines) j
     WHERE x.hlc > {after} AND x.hlc < {end} AND {store_sql("x.origin")} = {store}
       AND j.value ->> '$.sku' = {sku}))"""


_INSERT_MOVES = "INSERT INTO st_moves (store, sku, hlc, eid, line, delta) VALUES (?, ?, ?, ?, ?, ?)"

_BUMP_BUCKET = """
INSERT INTO st_buckets (store, sku, bucket, delta) VALUES (?, ?, ?, ?)
ON CONFLICT (sku, store, bucket) DO UPDATE SET delta = st_buckets.delta + excluded.delta
"""

_NEW_STOCK = """
INSERT INTO st_stock (store, sku, count_hlc, count_origin, count_seq, count, delta_after)
"""

# One row per (store, sku) per batch: (store, sku, total delta, min hlc of the batch's
# moves). If every new move is after the count (the common case) add the total;
# otherwise a late move straddles the count, so recount (the batch's moves are already
# stored) - correct either way, and the slow branch is rare.
_BUMP_AGGREGATED = f"""{_NEW_STOCK} VALUES (?1, ?2, -1, '', 0, 0, ?3)
ON CONFLICT (sku, store) DO UPDATE SET delta_after = CASE
    WHEN ?4 > st_stock.count_hlc THEN st_stock.delta_after + ?3
    ELSE {recount_sql("?1", "?2", "st_stock.count_hlc")}
END
"""

# One move at a time (rare paths): counts iff it is after the (store, sku)'s count.
_BUMP_ONE = f"""{_NEW_STOCK} VALUES (?1, ?2, -1, '', 0, 0, ?3)
ON CONFLICT (sku, store) DO UPDATE SET delta_after = st_stock.delta_after
    + CASE WHEN ?4 > st_stock.count_hlc THEN ?3 ELSE 0 END
"""

_SET_COUNT = f"""{_NEW_STOCK} VALUES (?1, ?2, ?3, ?4, ?5, ?6, {recount_sql("?1", "?2", "?3")})
ON CONFLICT (sku, store) DO UPDATE SET count_hlc = ?3, count_origin = ?4, count_seq = ?5,
    count = ?6, delta_after = excluded.delta_after
"""


def bump_buckets(conn: sqlite3.Connection, buckets: Buckets) -> None:
    """Add per-(store, sku, bucket) sums of new moves; call before anything may recount."""
    conn.executemany(
        _BUMP_BUCKET,
        [(store, sku, b, d) for store, per in buckets.items() for (sku, b), d in per.items()],
    )


def bump_aggregated(conn: sqlite3.Connection, agg: Aggregated) -> None:
    """Apply per-(store, sku) [total, min_hlc] of moves already stored (rows and buckets)."""
    conn.executemany(
        _BUMP_AGGREGATED,
        [(store, sku, t, h) for store, per in agg.items() for sku, (t, h) in per.items()],
    )


def _store(conn: sqlite3.Connection, rows: list[MoveRow], sign: int) -> None:
    conn.executemany(_BUMP_BUCKET, [(r[0], r[1], bucket_of(r[2]), sign * r[5]) for r in rows])
    conn.executemany(_BUMP_ONE, [(st, sku, sign * d, hlc) for st, sku, hlc, _, _, d in rows])


def add_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Insert non-sale moves and keep the invariant, one move at a time (rare events)."""
    rows = list(moves)
    conn.executemany(_INSERT_MOVES, rows)
    _store(conn, rows, 1)


def remove_moves(conn: sqlite3.Connection, moves: Iterable[MoveRow]) -> None:
    """Undo `add_moves` exactly (used when an earlier void takes over a sale's restock)."""
    rows = list(moves)
    conn.executemany(
        "DELETE FROM st_moves WHERE store = ? AND sku = ? AND hlc = ? AND eid = ? AND line = ?",
        [r[:5] for r in rows],
    )
    _store(conn, rows, -1)


def apply_counts(conn: sqlite3.Connection, counts: Sequence[tuple[Event, StockCounted]]) -> None:
    """Record every count; a count that beats its (store, sku)'s current one resets it.

    Counts are rare, so a SELECT and a recount per count are fine here.
    """
    rows = [
        (ev.id, stock_store(ev.origin), b.sku, ev.hlc, ev.origin, ev.seq, b.count)
        for ev, b in counts
    ]
    conn.executemany(
        "INSERT INTO st_counts (eid, store, sku, hlc, origin, seq, count)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    for _, store, sku, hlc, origin, seq, count in rows:
        if _beats_current(conn, store, sku, (hlc, origin, seq)):
            conn.execute(_SET_COUNT, (store, sku, hlc, origin, seq, count))


# (eid, store, sku, hlc, origin, seq, count): st_counts column order
CountRow = tuple[str, str, str, int, str, int, int]


def add_count(conn: sqlite3.Connection, row: CountRow) -> None:
    """One count made by the fold itself (a winning recount resolution), as `apply_counts`."""
    conn.execute("INSERT INTO st_counts VALUES (?, ?, ?, ?, ?, ?, ?)", row)
    _, store, sku, hlc, origin, seq, count = row
    if _beats_current(conn, store, sku, (hlc, origin, seq)):
        conn.execute(_SET_COUNT, (store, sku, hlc, origin, seq, count))


_UNCOUNTED = f"""UPDATE st_stock SET count_hlc = -1, count_origin = '', count_seq = 0, count = 0,
    delta_after = {recount_sql("?1", "?2", "-1")} WHERE store = ?1 AND sku = ?2"""


def remove_count(conn: sqlite3.Connection, eid: str) -> None:
    """Undo `add_count` exactly: if it was its (store, sku)'s winning count, the best
    remaining one wins (or none: the level is the sum of every move again)."""
    row = conn.execute(
        "SELECT store, sku, hlc, origin, seq FROM st_counts WHERE eid = ?", (eid,)
    ).fetchone()
    if row is None:
        return
    store, sku, hlc, origin, seq = row
    conn.execute("DELETE FROM st_counts WHERE eid = ?", (eid,))
    current = conn.execute(
        "SELECT count_hlc, count_origin, count_seq FROM st_stock WHERE store = ? AND sku = ?",
        (store, sku),
    ).fetchone()
    if current is None or tuple(current) != (hlc, origin, seq):
        return
    best = conn.execute(
        "SELECT hlc, origin, seq, count FROM st_counts WHERE store = ? AND sku = ?"
        " ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 1",
        (store, sku),
    ).fetchone()
    if best is None:
        conn.execute(_UNCOUNTED, (store, sku))
    else:
        conn.execute(_SET_COUNT, (store, sku, *best))


_UNMOVED = f"""SELECT NOT EXISTS (SELECT 1 FROM st_moves WHERE store = ?1 AND sku = ?2)
  AND NOT EXISTS (SELECT 1 FROM st_counts WHERE store = ?1 AND sku = ?2)
  AND NOT EXISTS (SELECT 1 FROM st_sales x, json_each(x.lines) j
    WHERE {store_sql("x.origin")} = ?1 AND j.value ->> '$.sku' = ?2)"""


def forget_if_unmoved(conn: sqlite3.Connection, store: str, sku: str) -> None:
    """Drop the (store, sku) stock row once nothing moves or counts it any more (after
    an undone resolution: a fold without it would have no row). Reads the sales of
    every store: only a resolution that stops being the effective one comes here."""
    if conn.execute(_UNMOVED, (store, sku)).fetchone()[0]:
        conn.execute("DELETE FROM st_stock WHERE store = ? AND sku = ?", (store, sku))


def _beats_current(
    conn: sqlite3.Connection, store: str, sku: str, key: tuple[int, str, int]
) -> bool:
    row = conn.execute(
        "SELECT count_hlc, count_origin, count_seq FROM st_stock WHERE store = ? AND sku = ?",
        (store, sku),
    ).fetchone()
    return row is None or key > tuple(row)
