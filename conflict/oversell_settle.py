"""Settling held oversell runs a slice at a time, in the log writer's spare time.

The fold holds (store, SKU)s back (`oversold.maintain`): a catch-up's frames, and sales
arriving hours late, would otherwise replay history in the frame's transaction. Each
held one has its rows kept up to an HLC `h0` and must be replayed from there.

Replaying one (store, SKU) at a time read every sale since its `h0` for each (the sale
lines live in the sales register's JSON, not indexed by SKU): 22 s for the 300 SKUs a
100,000-event catch-up held, 73 ms each, the sale that came meanwhile waiting for one.
A pass replays all of them at once, walking the register in HLC order, `SLICE_SALES`
sales per transaction:

- start: take the held (store, SKU)s, clear their rows from `h0` on, and note the level
  and the run open just before `h0` (`_level_at`: from the level the fold noted when it
  held it, or from the stock buckets and counts, moving `h0` back to a bucket's start,
  never by reading later sales);
- each slice: the sale lines, moves and counts of those (store, SKU)s in the next range
  of HLCs, walked from where the last slice stopped (level and run kept in the
  settling table, so a pass outlives a restart);
- the last slice (past the newest sale) writes each tail: the runs are kept again.

A batch that moves a settling (store, SKU) behind the cursor takes it out of the pass
(`oversold.maintain`): held again from the earlier HLC, it joins the next pass. What
lands ahead of the cursor is read when the pass gets there.
"""

from __future__ import annotations

import sqlite3

import msgspec

from conflict import oversold
from conflict.oversold import HLC_END, PASS, SETTLING, Key, RunKey, Step
from conflict.stock import HLC_PER_BUCKET, bucket_of, recount_sql

__all__ = ["MOST_KEYS", "SLICE_SALES", "settle_slice"]

SLICE_SALES = 2_000  # sales per slice: ~10 ms of the writer (a waiting sale waits that)
MOST_KEYS = 2_000  # (store, SKU)s per pass: its start reads a few rows for each

_json = msgspec.json.Encoder().encode

_MOVES = f"""
SELECT m.store, m.sku, m.hlc, m.eid, m.line, m.delta FROM {SETTLING} k
JOIN st_moves m ON m.sku = k.sku AND m.store = k.store
WHERE m.hlc >= max(k.h0, ?1) AND m.hlc <= ?2
"""
_COUNTS = f"""
SELECT c.store, c.sku, c.hlc, c.origin, c.seq, c.count, c.eid FROM {SETTLING} k
JOIN st_counts c ON c.sku = k.sku AND c.store = k.store
WHERE c.hlc >= max(k.h0, ?1) AND c.hlc <= ?2
"""
_LAST_COUNT = (
    "SELECT hlc, count FROM st_counts WHERE sku = ? AND store = ? AND hlc < ?"
    " ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 1"
)
_TAILS = f"""
SELECT t.store, t.sku, t.hlc FROM {SETTLING} k
JOIN st_oversell_tail t ON t.sku = k.sku AND t.store = k.store
"""
_BUCKETS = "SELECT COALESCE(SUM(delta), 0) FROM st_buckets WHERE sku = ? AND store = ?"

_Walking = tuple[int, int, RunKey | None, int]  # h0, level, run, last HLC walked


def settle_slice(conn: sqlite3.Connection) -> bool:
    """One slice of the settling pass (starting one if none is under way and something
    is held); True while work is left."""
    cursor = oversold.pass_cursor(conn)
    if cursor is None:
        if not _start(conn):
            return False
    else:
        _advance(conn, cursor)
    left = f"SELECT 1 FROM {SETTLING} UNION ALL SELECT 1 FROM st_oversell_stale LIMIT 1"
    return conn.execute(left).fetchone() is not None


def _start(conn: sqlite3.Connection) -> bool:
    """Take up to MOST_KEYS held (store, SKU)s into a pass; False if none is held."""
    taken = oversold.take_stale(conn, MOST_KEYS)
    if not taken:
        return False
    w = oversold.Writes()
    rows: list[tuple[object, ...]] = []
    starts: list[int] = []
    for key, hlc, known in sorted(taken):
        store, sku = key
        if not oversold.stocked(conn, key):  # an undone resolution took its last move
            _forget(conn, key)
            continue
        h0, level = (hlc, known) if known is not None else _level_at(conn, key, hlc)
        oversold.clear_from(conn, key, h0)
        run = oversold.open_run(conn, key, level, h0)
        if run is not None:
            w.runs[(store, sku, run)] = None  # open again: whatever ended it is replayed
        rows.append((store, sku, h0, level, *(run or (None, None, None)), -1))
        starts.append(h0)
    w.flush(conn)
    conn.executemany(f"INSERT INTO {SETTLING} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    if starts:
        conn.execute(f"INSERT INTO {PASS} VALUES (?)", (min(starts),))
    return True


def _level_at(conn: sqlite3.Connection, key: Key, hlc: int) -> tuple[int, int]:
    """An HLC at or before `hlc` and the level just before it, from the counts and the
    stock buckets: after the last count before `hlc` if it is in `hlc`'s bucket, else
    that bucket's start."""
    store, sku = key
    start = bucket_of(hlc) * HLC_PER_BUCKET
    count = conn.execute(_LAST_COUNT, (sku, store, hlc)).fetchone()
    if count is not None and count[0] >= start:  # every step at its HLC is before it
        return int(count[0]) + 1, int(count[1])
    if count is None:
        before = conn.execute(_BUCKETS + " AND bucket < ?", (sku, store, bucket_of(hlc)))
        return start, int(before.fetchone()[0])
    after = conn.execute(f"SELECT {recount_sql('?1', '?2', '?3')}", (store, sku, count[0]))
    from_start = conn.execute(_BUCKETS + " AND bucket >= ?", (sku, store, bucket_of(hlc)))
    return start, int(count[1]) + int(after.fetchone()[0]) - int(from_start.fetchone()[0])


def _advance(conn: sqlite3.Connection, cursor: int) -> None:
    """Walk the pass's (store, SKU)s through the next SLICE_SALES sales' HLCs."""
    walking = _walking(conn)
    nxt = conn.execute(
        "SELECT hlc FROM st_sales WHERE hlc >= ? ORDER BY hlc LIMIT 1 OFFSET ?",
        (cursor, SLICE_SALES),
    ).fetchone()
    hi = HLC_END if nxt is None else max(int(nxt[0]) - 1, cursor)  # always moves on
    steps = _steps(conn, walking, cursor, hi)
    w = oversold.Writes()
    for key, (h0, level, run, last) in walking.items():
        mine = sorted(steps.get(key, []))
        if mine:
            level, run = w.walk(key, mine, level, run)
            walking[key] = (h0, level, run, max(last, mine[-1][0]))
    if hi == HLC_END:
        _finish(conn, walking, w)
        return
    w.flush(conn)
    conn.executemany(
        f"UPDATE {SETTLING} SET level = ?, run_hlc = ?, run_eid = ?, run_line = ?, last = ?"
        " WHERE store = ? AND sku = ?",
        [(lv, *(run or (None, None, None)), last, *key)
         for key, (_, lv, run, last) in walking.items()],
    )  # fmt: skip
    conn.execute(f"UPDATE {PASS} SET cursor = ?", (hi + 1,))


def _finish(conn: sqlite3.Connection, walking: dict[Key, _Walking], w: oversold.Writes) -> None:
    """The pass is past the newest sale: each tail at or after every step, runs kept;
    a (store, SKU) whose last move went meanwhile (ahead of the cursor) keeps nothing."""
    tails = {(str(s), str(k)): int(h) for s, k, h in conn.execute(_TAILS)}
    gone = [key for key in walking if not oversold.stocked(conn, key)]
    for key, (_, _, run, last) in walking.items():
        w.tail(key, max(last, tails.get(key, -1)), run)
    w.flush(conn)
    for key in gone:  # after the flush: what it wrote of them goes too
        _forget(conn, key)
    conn.execute(f"DELETE FROM {SETTLING}")
    conn.execute(f"DELETE FROM {PASS}")


def _forget(conn: sqlite3.Connection, key: Key) -> None:
    """A (store, SKU) with no stock row has no moves: no runs, no tail (`kept` counts
    tails against stock rows)."""
    store, sku = key
    for table in ("st_oversold", "st_oversell_runs", "st_oversell_tail"):
        conn.execute(f"DELETE FROM {table} WHERE sku = ? AND store = ?", (sku, store))


def _walking(conn: sqlite3.Connection) -> dict[Key, _Walking]:
    out: dict[Key, _Walking] = {}
    for store, sku, h0, level, run_hlc, run_eid, run_line, last in conn.execute(
        f"SELECT * FROM {SETTLING}"
    ):
        run = None if run_hlc is None else (int(run_hlc), str(run_eid), int(run_line))
        out[(str(store), str(sku))] = (int(h0), int(level), run, int(last))
    return out


def _steps(
    conn: sqlite3.Connection, walking: dict[Key, _Walking], lo: int, hi: int
) -> dict[Key, list[Step]]:
    """The replay steps of each walking (store, SKU) with HLC in [max(lo, h0), hi]."""
    out: dict[Key, list[Step]] = {key: [] for key in walking}
    keys = _json(sorted(walking)).decode()
    for sale, hlc, store, line, sku, qty in conn.execute(oversold.LINES_OF_MANY, (lo, hi, keys)):
        key = (store, sku)
        if key in out and hlc >= walking[key][0]:
            out[key].append((hlc, 0, sale, int(line), -int(qty), sale))
    for store, sku, h, e, ln, d in conn.execute(_MOVES, (lo, hi)):
        out[(str(store), str(sku))].append((int(h), 0, e, ln, d, e))
    for store, sku, h, o, q, n, e in conn.execute(_COUNTS, (lo, hi)):
        out[(str(store), str(sku))].append((int(h), 1, o, q, n, e))
    return out
