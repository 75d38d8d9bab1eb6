"""Oversell runs kept by the fold: the negative runs of every (store, SKU)'s stock, in
the fold's own transaction, so `conflicts` reads them instead of replaying history.

What is kept is exactly what the full replay (`detect_stock.oversell`) finds, as rows:

- `st_oversold`: each negative move of a run (a move that took or kept the level below
  zero), with the level after it;
- `st_oversell_runs`: each run, by its first move, and the count that ended it if one
  did (`flag_recount`);
- `st_oversell_tail`: per (store, SKU) an HLC at or after its every move and count,
  and the run open there.

A batch's sale lines past their (store, SKU)'s tail - a till appending its own sales,
the common case - continue the replay from the level the stock row holds, with no read
of earlier sales. Anything else (a sale arriving late, a receipt, a void's restock, a
count, a resolution's effects: every write to st_moves or st_counts, noted by triggers
in `st_oversell_dirty`) replays that (store, SKU) from the earliest HLC it changed: the
level just before it comes from the count before it and the bucket sums, the rows from
there on are replaced. So the rows are a function of the stock tables, whatever order
the events came in, and of nothing else: the tests compare them with the full replay.

These tables are derived, like an index: not in the state digest, not snapshotted. A
state whose tails do not cover its stock rows (a snapshot just loaded) is re-derived in
full by `ensure` (the fold's `create_tables`, which `rebuild_state` and every loader of
a snapshot call after loading it).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import msgspec

from conflict.stock import recount_sql, store_sql

__all__ = [
    "HLC_END", "HOLD_AFTER", "LAZY_LINES", "LINES_OF_MANY", "LINES_OF_ONE", "PASS", "RUN_ENDS",
    "SETTLING", "TABLES", "Writes", "clear_from", "create", "drop", "ensure", "held", "kept",
    "maintain", "open_run", "pass_cursor", "settling", "sku_needle", "stocked", "take_stale",
]  # fmt: skip

_json = msgspec.json.Encoder().encode

TABLES: dict[str, str] = {
    "st_oversold": "store TEXT NOT NULL, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " eid TEXT NOT NULL, line INTEGER NOT NULL, level INTEGER NOT NULL,"
    " PRIMARY KEY (sku, store, hlc, eid, line)",
    "st_oversell_runs": "store TEXT NOT NULL, sku TEXT NOT NULL, run_hlc INTEGER NOT NULL,"
    " run_eid TEXT NOT NULL, run_line INTEGER NOT NULL, end_hlc INTEGER, end_eid TEXT,"
    " end_origin TEXT, end_count INTEGER, PRIMARY KEY (sku, store, run_hlc, run_eid, run_line)",
    # hlc: at or after every move and count of the (store, sku); run_*: the run open there
    "st_oversell_tail": "store TEXT NOT NULL, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " run_hlc INTEGER, run_eid TEXT, run_line INTEGER, PRIMARY KEY (sku, store)",
}
_DIRTY = "st_oversell_dirty"  # (store, sku, hlc) of writes to st_moves / st_counts
# (store, sku)s held back (`_replay_or_hold`, `_hold_in_order`): their rows from `hlc` on
# are not kept; `level`, when known, is the level just before `hlc` (`oversell_settle`)
_STALE = "st_oversell_stale"
# The settling pass in progress (`oversell_settle`): the (store, sku)s it took from
# _STALE, each replayed from its `h0` up to the pass's cursor, with the level and run
# reached there and the last HLC walked; _PASS holds the cursor.
SETTLING = "st_oversell_settling"
PASS = "st_oversell_pass"
# A late (store, sku) is replayed at once if that reads at most a * (the batch's sale
# lines) + b sales, else held back (`_replay_or_hold`). A list: tests set it to hold all.
HOLD_AFTER = [4, 1000]
# A batch with this many sale lines is a catch-up's frame: its (store, sku)s are held
# (`_hold_in_order`) and settled a slice at a time in the writer's spare time, not walked
# in the frame's transaction (issue 19: the catch-up's per-event path).
LAZY_LINES = 256
_TRIGGERS = {
    f"{table}__oversell_{event.lower()}": (table, event, row)
    for table in ("st_moves", "st_counts")
    for event, row in (("INSERT", "NEW"), ("DELETE", "OLD"))
}

Key = tuple[str, str]  # (store, sku)
RunKey = tuple[int, str, int]  # (hlc, eid, line) of a run's first move
End = tuple[int, str, str, int]  # (hlc, eid, origin, count) of the count that ended a run
# (hlc, 0 move | 1 count, eid | origin, line | seq, delta | count, eid): replay order
Step = tuple[int, int, str, int, int, str]
SaleSteps = dict[Key, list[Step]]


def sku_needle(sku: str) -> str:
    """The text a sale line of `sku` holds in st_sales.lines (the fold's JSON encoding):
    `instr` on it skips, in C, the sales without the SKU before any JSON is parsed."""
    return '"sku":' + _json(sku).decode()


def create(conn: sqlite3.Connection) -> None:
    for name, cols in TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}) WITHOUT ROWID")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_DIRTY} (store TEXT NOT NULL, sku TEXT NOT NULL,"
        " hlc INTEGER NOT NULL)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {_STALE} (store TEXT NOT NULL, sku TEXT NOT NULL,"
        " hlc INTEGER NOT NULL, level INTEGER, PRIMARY KEY (sku, store)) WITHOUT ROWID"
    )
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({_STALE})")}
    if "level" not in columns:  # held by a build before the settling passes: not known
        conn.execute(f"ALTER TABLE {_STALE} ADD COLUMN level INTEGER")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {SETTLING} (store TEXT NOT NULL, sku TEXT NOT NULL,"
        " h0 INTEGER NOT NULL, level INTEGER NOT NULL, run_hlc INTEGER, run_eid TEXT,"
        " run_line INTEGER, last INTEGER NOT NULL, PRIMARY KEY (sku, store)) WITHOUT ROWID"
    )
    conn.execute(f"CREATE TABLE IF NOT EXISTS {PASS} (cursor INTEGER NOT NULL)")
    for name, (table, event, row) in _TRIGGERS.items():
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} BEGIN"
            f" INSERT INTO {_DIRTY} VALUES ({row}.store, {row}.sku, {row}.hlc); END"
        )


def drop(conn: sqlite3.Connection) -> None:
    for name in (*TABLES, _DIRTY, _STALE, SETTLING, PASS):
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def kept(conn: sqlite3.Connection) -> bool:
    """Whether the tables exist and cover every (store, sku) of the stock."""
    try:
        tails = conn.execute("SELECT count(*) FROM st_oversell_tail").fetchone()[0]
    except sqlite3.OperationalError:
        return False  # a database from before the runs were kept
    return bool(tails == conn.execute("SELECT count(*) FROM st_stock").fetchone()[0])


def ensure(conn: sqlite3.Connection) -> None:
    """Derive every run afresh unless the tables already cover the stock. What is held
    back stays held, for the settling passes (`oversell_settle`): replaying it here, at a
    log's open, would hold up a till's restart (seconds at 1,000,000 events)."""
    if kept(conn):
        return
    for name in (*TABLES, _DIRTY, _STALE, SETTLING, PASS):
        conn.execute(f"DELETE FROM {name}")
    keys = conn.execute("SELECT store, sku FROM st_stock").fetchall()
    _replay_from(conn, {(str(s), str(k)): -1 for s, k in keys})


def held(conn: sqlite3.Connection) -> set[Key]:
    """The (store, sku)s whose rows are held back or being settled: read by the full
    replay."""
    return {key for key, _ in _stale(conn)} | settling(conn).keys()


def settling(conn: sqlite3.Connection) -> dict[Key, int]:
    """The (store, sku)s of the settling pass in progress, each with its `h0`."""
    rows = conn.execute(f"SELECT store, sku, h0 FROM {SETTLING}")
    return {(str(s), str(k)): int(h) for s, k, h in rows}


def pass_cursor(conn: sqlite3.Connection) -> int | None:
    """Where the settling pass in progress has got to (None: no pass)."""
    row = conn.execute(f"SELECT cursor FROM {PASS}").fetchone()
    return None if row is None else int(row[0])


def take_stale(conn: sqlite3.Connection, most: int) -> list[tuple[Key, int, int | None]]:
    """Up to `most` held (store, sku)s, taken out of _STALE: (key, hlc, level or None)."""
    rows = conn.execute(f"SELECT store, sku, hlc, level FROM {_STALE} LIMIT ?", (most,))
    taken = [((str(s), str(k)), int(h), None if v is None else int(v)) for s, k, h, v in rows]
    conn.executemany(
        f"DELETE FROM {_STALE} WHERE store = ? AND sku = ?", [key for key, _, _ in taken]
    )
    return taken


# --- the fold's part ---------------------------------------------------------------------


class Writes:
    """What the walks of one batch write, in one statement per table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, int, int]] = []
        self.runs: dict[tuple[str, str, RunKey], End | None] = {}
        self.tails: list[tuple[str, str, int, int | None, str | None, int | None]] = []

    def walk(
        self, key: Key, steps: Iterable[Step], level: int, run: RunKey | None
    ) -> tuple[int, RunKey | None]:
        """Replay `steps` (in order) from `level`, inside `run` if one is open, as
        `detect_stock._replay` does; returns the level and the run still open after them."""
        store, sku = key
        rows, runs = self.rows, self.runs
        for hlc, is_count, who, num, n, eid in steps:
            level = n if is_count else level + n
            if level < 0:
                if run is None:
                    run = (hlc, eid, num)  # counts are never below zero: a move starts a run
                    runs[(store, sku, run)] = None
                if n < 0 and not is_count:
                    rows.append((store, sku, hlc, eid, num, level))
            elif run is not None:
                runs[(store, sku, run)] = (hlc, eid, who, n) if is_count else None
                run = None
        return level, run

    def tail(self, key: Key, hlc: int, run: RunKey | None) -> None:
        self.tails.append((*key, hlc, *(run or (None, None, None))))

    def flush(self, conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT INTO st_oversold VALUES (?, ?, ?, ?, ?, ?)", self.rows)
        conn.executemany(
            "INSERT OR REPLACE INTO st_oversell_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(st, sku, *r, *(end or (None,) * 4)) for (st, sku, r), end in self.runs.items()],
        )
        conn.executemany("INSERT OR REPLACE INTO st_oversell_tail VALUES (?, ?, ?, ?, ?, ?)",
                         self.tails)  # fmt: skip


def maintain(conn: sqlite3.Connection, sale_steps: SaleSteps) -> None:
    """After a batch's writes: bring the runs of every (store, sku) it moved up to date.
    `sale_steps`: the batch's new sale lines per (store, sku), as replay steps."""
    dirty = _drain_dirty(conn)
    keys = sorted(sale_steps.keys() | dirty.keys())
    if not keys:
        return
    lines = sum(map(len, sale_steps.values()))
    frame = lines >= LAZY_LINES  # a catch-up's: nothing walked or replayed in it, all held
    w = Writes()
    late: dict[Key, int] = {}
    lazy: dict[Key, tuple[int, int, int]] = {}  # in order, held: (first, level, tail)
    restarted: list[Key] = []
    cursor = -1  # read once a key of the batch is in the settling pass
    for key, (tail, run, on_hand, held_from, pass_from) in zip(
        keys, _tails(conn, keys), strict=True
    ):
        steps = sale_steps.get(key, [])
        first = min([s[0] for s in steps] + ([dirty[key]] if key in dirty else []))
        if pass_from is not None:  # the pass reads what lands ahead of it; behind it, restart
            if cursor < 0:
                at = pass_cursor(conn)
                cursor = HLC_END if at is None else at
            if first < max(cursor, pass_from):
                late[key] = min(pass_from, first)
                restarted.append(key)
            continue
        in_order = key not in dirty and tail is not None and first > tail
        if held_from is not None:  # held back: settled a slice at a time (`oversell_settle`)
            late[key] = min(held_from, first)
        elif in_order or (tail is None and key not in dirty):  # the till's own sales
            steps.sort()
            if frame:
                lazy[key] = (first, on_hand - sum(s[4] for s in steps), steps[-1][0])
            else:
                _append(w, key, steps, on_hand, run)
        else:
            late[key] = first
    w.flush(conn)
    conn.executemany(f"DELETE FROM {SETTLING} WHERE store = ? AND sku = ?", restarted)
    _hold_in_order(conn, lazy)
    if frame:
        _hold(conn, late)
    else:
        _replay_or_hold(conn, late, budget=HOLD_AFTER[0] * lines + HOLD_AFTER[1])


def _drain_dirty(conn: sqlite3.Connection) -> dict[Key, int]:
    """The (store, sku)s whose moves or counts the batch wrote, and the earliest HLC."""
    dirty = {
        (str(s), str(k)): int(h)
        for s, k, h in conn.execute(f"SELECT store, sku, MIN(hlc) FROM {_DIRTY} GROUP BY 1, 2")
    }
    if dirty:
        conn.execute(f"DELETE FROM {_DIRTY}")
    return dirty


def _stale(conn: sqlite3.Connection) -> list[tuple[Key, int]]:
    return [
        ((str(s), str(k)), int(h))
        for s, k, h in conn.execute(f"SELECT store, sku, hlc FROM {_STALE}")
    ]


_TAILS = (
    "SELECT t.hlc, t.run_hlc, t.run_eid, t.run_line, s.count + s.delta_after, h.hlc, p.h0"
    " FROM json_each(?) k LEFT JOIN st_stock s ON s.sku = k.value ->> 1"
    " AND s.store = k.value ->> 0"
    " LEFT JOIN st_oversell_tail t ON t.sku = k.value ->> 1 AND t.store = k.value ->> 0"
    f" LEFT JOIN {_STALE} h ON h.sku = k.value ->> 1 AND h.store = k.value ->> 0"
    f" LEFT JOIN {SETTLING} p ON p.sku = k.value ->> 1 AND p.store = k.value ->> 0"
    " ORDER BY k.key"
)
# Per key: tail HLC (None: new), the run open there, the level now, and since when it is
# held or in the settling pass (None: not)
_KeyNow = tuple[int | None, RunKey | None, int, int | None, int | None]


def _tails(conn: sqlite3.Connection, keys: list[Key]) -> Iterable[_KeyNow]:
    """Per key (in order): its tail HLC (None: new), the run open there, its level now,
    and since when it is held or settling (one read for the batch's keys)."""
    for hlc, run_hlc, run_eid, run_line, on_hand, held_from, pass_from in conn.execute(
        _TAILS, (_json(keys).decode(),)
    ):
        run = None if run_hlc is None else (int(run_hlc), str(run_eid), int(run_line))
        yield (None if hlc is None else int(hlc)), run, int(on_hand or 0), held_from, pass_from


def _append(w: Writes, key: Key, steps: list[Step], on_hand: int, run: RunKey | None) -> None:
    """Sales past their (store, sku)'s tail continue from the level before them: the
    stock row's level less theirs (nothing else of the (store, sku) moved in the batch)."""
    level = on_hand - sum(s[4] for s in steps)
    _, run = w.walk(key, steps, level, run if level < 0 else None)
    w.tail(key, steps[-1][0], run)


# Held from `hlc` on; the level just before it is kept only while nothing earlier
# came (an earlier hold replaces it, and knows its own level or not).
_HOLD = f"""
INSERT INTO {_STALE} VALUES (?1, ?2, ?3, ?4) ON CONFLICT (sku, store) DO UPDATE SET
    level = CASE WHEN excluded.hlc < hlc THEN excluded.level ELSE level END,
    hlc = min(hlc, excluded.hlc)
"""


def _replay_or_hold(conn: sqlite3.Connection, late: dict[Key, int], budget: int) -> None:
    """Replay the late (store, sku)s whose replay reads at most `budget` sales (a peer's
    sale seconds late: the usual case). Hold the rest (`st_oversell_stale`): a catch-up
    of hours of a peer's history would otherwise replay those hours at every batch; read
    in full by `conflicts` meanwhile, settled in the writer's spare time."""
    cheap_from = conn.execute(
        "SELECT hlc FROM st_sales ORDER BY hlc DESC LIMIT 1 OFFSET ?", (budget,)
    ).fetchone()
    now: dict[Key, int] = {}
    hold: dict[Key, int] = {}
    for key, h0 in late.items():
        if cheap_from is None or h0 > cheap_from[0]:
            now[key] = h0
        else:
            hold[key] = h0
    _hold(conn, hold)
    if now:
        conn.executemany(f"DELETE FROM {_STALE} WHERE store = ? AND sku = ?", list(now))
        _replay_from(conn, now)


def _hold(conn: sqlite3.Connection, late: dict[Key, int]) -> None:
    """Hold (store, sku)s from their HLCs on, the level there not known (a held one
    keeps the level it knew before an HLC it still starts at)."""
    conn.executemany(_HOLD, [(*key, h0, None) for key, h0 in late.items()])
    for key in late:
        _extend_tail(conn, key)


def _hold_in_order(conn: sqlite3.Connection, lazy: dict[Key, tuple[int, int, int]]) -> None:
    """Hold a catch-up frame's (store, sku)s that moved in order, each with the level
    before its first step (so its settling starts there, with no read of its history)
    and its tail moved past its last step."""
    conn.executemany(_HOLD, [(*key, first, level) for key, (first, level, _) in lazy.items()])
    conn.executemany(
        "INSERT INTO st_oversell_tail (store, sku, hlc) VALUES (?, ?, ?)"
        " ON CONFLICT (sku, store) DO UPDATE SET hlc = max(hlc, excluded.hlc)",
        [(*key, last) for key, (_, _, last) in lazy.items()],
    )


def _extend_tail(conn: sqlite3.Connection, key: Key) -> None:
    """Keep a held (store, sku)'s tail at or after every move and count it has; and a
    tail only while it has a stock row (`kept` counts one against the other): the batch
    may have taken its last move out (a resolution undone), its runs then go when it
    is settled."""
    if not stocked(conn, key):
        conn.execute("DELETE FROM st_oversell_tail WHERE store = ? AND sku = ?", key)
        return
    conn.execute(
        "INSERT INTO st_oversell_tail (store, sku, hlc) VALUES (?1, ?2, max("
        " COALESCE((SELECT MAX(hlc) FROM st_moves WHERE sku = ?2 AND store = ?1), -1),"
        " COALESCE((SELECT MAX(hlc) FROM st_counts WHERE sku = ?2 AND store = ?1), -1),"
        " COALESCE((SELECT MAX(hlc) FROM st_sales), -1)))"
        " ON CONFLICT (sku, store) DO UPDATE SET hlc = max(hlc, excluded.hlc)",
        key,
    )


def open_run(conn: sqlite3.Connection, key: Key, level: int, before: int) -> RunKey | None:
    """The run still open just before HLC `before` (the level there is below zero)."""
    if level >= 0:
        return None
    store, sku = key
    row = conn.execute(
        "SELECT run_hlc, run_eid, run_line FROM st_oversell_runs WHERE sku = ? AND store = ?"
        " AND run_hlc < ? ORDER BY run_hlc DESC, run_eid DESC, run_line DESC LIMIT 1",
        (sku, store, before),
    ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]), int(row[2]))


# --- replaying a (store, sku) from an HLC ---------------------------------------------------

# The sale lines of (store, sku)s with lo <= HLC <= hi, also read by detect_stock.
_LINES = (
    "SELECT s.id, s.hlc, {store} AS store, j.key, j.value ->> '$.sku', j.value ->> '$.qty'"
    " FROM st_sales s, json_each(s.lines) j WHERE s.hlc >= ? AND s.hlc <= ? AND {where}"
)
# One (store, sku): `instr` drops other sales before their JSON is parsed.
LINES_OF_ONE = _LINES.format(
    store=store_sql("s.origin"),
    where=f"{store_sql('s.origin')} = ? AND instr(s.lines, ?) AND j.value ->> '$.sku' = ?",
)
# Many: one pass over the range, keeping (in SQL) only the (store, sku)s asked for.
LINES_OF_MANY = _LINES.format(
    store=store_sql("s.origin"),
    where=f"({store_sql('s.origin')}, j.value ->> '$.sku') IN"
    " (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
)
HLC_END = 2**63 - 1  # the last HLC there can be (decoding refuses 2**63 and more)
_FEW = 4  # up to this many (store, sku)s read their own sale lines; more share one pass


def _replay_from(conn: sqlite3.Connection, since: dict[Key, int]) -> None:
    """Replace the rows of each (store, sku) from its HLC on by a replay of its moves and
    counts from there (-1: its whole history)."""
    if not since:
        return
    lines = _sale_lines(conn, since)
    w = Writes()
    for key, h0 in sorted(since.items()):
        store, sku = key
        tail = conn.execute(
            "SELECT hlc FROM st_oversell_tail WHERE sku = ? AND store = ?", (sku, store)
        ).fetchone()
        clear_from(conn, key, h0)
        if not stocked(conn, key):  # an undone resolution took its last move away
            conn.execute("DELETE FROM st_oversell_tail WHERE sku = ? AND store = ?", (sku, store))
            continue
        steps = sorted(lines[key] + _moves_and_counts(conn, key, h0))
        level = _level_before(conn, key, h0, steps)
        run = open_run(conn, key, level, h0)
        if run is not None:
            w.runs[(store, sku, run)] = None  # open again: whatever ended it is replayed
        _, run = w.walk(key, steps, level, run)
        w.tail(key, max([s[0] for s in steps[-1:]] + ([tail[0]] if tail else []), default=-1), run)
    w.flush(conn)


def clear_from(conn: sqlite3.Connection, key: Key, h0: int) -> None:
    """Delete the (store, sku)'s negative moves and runs from HLC `h0` on: a replay of
    it from there writes them again."""
    store, sku = key
    for table, col in (("st_oversold", "hlc"), ("st_oversell_runs", "run_hlc")):
        conn.execute(
            f"DELETE FROM {table} WHERE sku = ? AND store = ? AND {col} >= ?", (sku, store, h0)
        )


def stocked(conn: sqlite3.Connection, key: Key) -> bool:
    row = conn.execute(
        "SELECT 1 FROM st_stock WHERE sku = ? AND store = ?", (key[1], key[0])
    ).fetchone()
    return row is not None


def _moves_and_counts(conn: sqlite3.Connection, key: Key, h0: int) -> list[Step]:
    store, sku = key
    moves = conn.execute(
        "SELECT hlc, eid, line, delta FROM st_moves WHERE sku = ? AND store = ? AND hlc >= ?",
        (sku, store, h0),
    )
    steps: list[Step] = [(h, 0, e, ln, d, e) for h, e, ln, d in moves]
    counts = conn.execute(
        "SELECT hlc, origin, seq, count, eid FROM st_counts WHERE sku = ? AND store = ?"
        " AND hlc >= ?",
        (sku, store, h0),
    )
    return steps + [(h, 1, o, q, n, e) for h, o, q, n, e in counts]


def _level_before(conn: sqlite3.Connection, key: Key, h0: int, steps: list[Step]) -> int:
    """The level after every step before HLC `h0`: from the latest count before it (or
    none), plus the moves after that count, less the moves at or after `h0` (`steps`)."""
    store, sku = key
    later = sum(n for _, is_count, _, _, n, _ in steps if not is_count)
    count = conn.execute(
        "SELECT hlc, count FROM st_counts WHERE sku = ? AND store = ? AND hlc < ?"
        " ORDER BY hlc DESC, origin DESC, seq DESC LIMIT 1",
        (sku, store, h0),
    ).fetchone()
    if count is None:
        total = conn.execute(
            "SELECT COALESCE(SUM(delta), 0) FROM st_buckets WHERE sku = ? AND store = ?",
            (sku, store),
        ).fetchone()[0]
        return int(total) - later
    after = conn.execute(f"SELECT {recount_sql('?1', '?2', '?3')}", (store, sku, count[0]))
    return int(count[1]) + int(after.fetchone()[0]) - later


def _sale_lines(conn: sqlite3.Connection, since: dict[Key, int]) -> SaleSteps:
    """Sale lines of each (store, sku) at or after its HLC, as replay steps."""
    out: SaleSteps = {key: [] for key in since}
    if len(since) <= _FEW:
        rows: Iterable[tuple[str, int, str, int, str, int]] = (
            row
            for (store, sku), h0 in since.items()
            for row in conn.execute(LINES_OF_ONE, (h0, HLC_END, store, sku_needle(sku), sku))
        )
    else:
        keys = _json(sorted(since)).decode()
        rows = conn.execute(LINES_OF_MANY, (min(since.values()), HLC_END, keys))
    for sale, hlc, store, line, sku, qty in rows:
        key = (store, sku)
        if key in out and hlc >= since[key]:
            out[key].append((hlc, 0, sale, int(line), -int(qty), sale))
    return out


# Every kept run, by its first move, and how it ended (`detect_stock.kept_oversell`).
RUN_ENDS = (
    "SELECT sku, store, run_hlc, run_eid, run_line, end_hlc, end_eid, end_origin, end_count"
    " FROM st_oversell_runs"
)
