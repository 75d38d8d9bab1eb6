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
    "RUN_ENDS", "TABLES", "create", "drop", "ensure", "kept", "maintain", "sku_needle",
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
    for name, (table, event, row) in _TRIGGERS.items():
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER {event} ON {table} BEGIN"
            f" INSERT INTO {_DIRTY} VALUES ({row}.store, {row}.sku, {row}.hlc); END"
        )


def drop(conn: sqlite3.Connection) -> None:
    for name in (*TABLES, _DIRTY):
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def kept(conn: sqlite3.Connection) -> bool:
    """Whether the tables exist and cover every (store, sku) of the stock."""
    try:
        tails = conn.execute("SELECT count(*) FROM st_oversell_tail").fetchone()[0]
    except sqlite3.OperationalError:
        return False  # a database from before the runs were kept
    return bool(tails == conn.execute("SELECT count(*) FROM st_stock").fetchone()[0])


def ensure(conn: sqlite3.Connection) -> None:
    """Derive every run afresh unless the tables already cover the stock."""
    if kept(conn):
        return
    for name in (*TABLES, _DIRTY):
        conn.execute(f"DELETE FROM {name}")
    keys = conn.execute("SELECT store, sku FROM st_stock").fetchall()
    _replay_from(conn, {(str(s), str(k)): -1 for s, k in keys})


# --- the fold's part ---------------------------------------------------------------------


class _Writes:
    """What the walks of one batch write, in one statement per table."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, int, str, int, int]] = []
        self.runs: dict[tuple[str, str, RunKey], End | None] = {}
        self.tails: list[tuple[str, str, int, int | None, str | None, int | None]] = []

    def walk(
        self, key: Key, steps: Iterable[Step], level: int, run: RunKey | None
    ) -> RunKey | None:
        """Replay `steps` (in order) from `level`, inside `run` if one is open, as
        `detect_stock._replay` does; returns the run still open after them."""
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
        return run

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
    dirty = {
        (str(s), str(k)): int(h)
        for s, k, h in conn.execute(f"SELECT store, sku, MIN(hlc) FROM {_DIRTY} GROUP BY 1, 2")
    }
    if dirty:
        conn.execute(f"DELETE FROM {_DIRTY}")
    late: dict[Key, int] = dict(dirty)
    appended = {}
    for key, steps in sale_steps.items():
        first = min(s[0] for s in steps)
        if key in dirty:
            late[key] = min(dirty[key], first)
        else:
            appended[key] = first
    if appended:
        late.update(_append(conn, {k: sale_steps[k] for k in appended}, appended))
    if late:
        _replay_from(conn, late)


_TAILS = (
    "SELECT t.store, t.sku, t.hlc, t.run_hlc, t.run_eid, t.run_line, s.count + s.delta_after"
    " FROM json_each(?) k JOIN st_stock s ON s.sku = k.value ->> 1 AND s.store = k.value ->> 0"
    " LEFT JOIN st_oversell_tail t ON t.sku = s.sku AND t.store = s.store"
)


def _append(conn: sqlite3.Connection, steps_of: SaleSteps, first: dict[Key, int]) -> dict[Key, int]:
    """Sales past their (store, sku)'s tail continue from the level before them (the
    stock row's level less theirs: nothing else of the (store, sku) moved in the batch).
    Returns those not past it: (store, sku) -> the HLC to replay from."""
    w, late = _Writes(), {}
    keys = _json(sorted(steps_of)).decode()
    for (store, sku), (_, _, hlc, run_hlc, run_eid, run_line, on_hand) in zip(
        sorted(steps_of), conn.execute(_TAILS, (keys,)).fetchall(), strict=True
    ):
        key = (store, sku)
        if hlc is not None and first[key] <= hlc:
            late[key] = first[key]
            continue
        steps = sorted(steps_of[key])
        level = on_hand - sum(s[4] for s in steps)
        run = None if run_hlc is None else (run_hlc, run_eid, run_line)
        run = w.walk(key, steps, level, run if level < 0 else None)
        w.tail(key, steps[-1][0], run)
    w.flush(conn)
    return late


def _open_run(conn: sqlite3.Connection, key: Key, level: int, before: int) -> RunKey | None:
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

_LINES = (
    "SELECT s.id, s.hlc, {store} AS store, j.key, j.value ->> '$.sku', j.value ->> '$.qty'"
    " FROM st_sales s, json_each(s.lines) j WHERE s.hlc >= ? AND {where}"
)
_LINES_OF_ONE = _LINES.format(
    store=store_sql("s.origin"),
    where=f"{store_sql('s.origin')} = ? AND instr(s.lines, ?) AND j.value ->> '$.sku' = ?",
)
_LINES_OF_MANY = _LINES.format(
    store=store_sql("s.origin"),
    where=f"({store_sql('s.origin')}, j.value ->> '$.sku') IN"
    " (SELECT value ->> 0, value ->> 1 FROM json_each(?))",
)
_FEW = 4  # up to this many (store, sku)s read their own sale lines; more share one pass


def _replay_from(conn: sqlite3.Connection, since: dict[Key, int]) -> None:
    """Replace the rows of each (store, sku) from its HLC on by a replay of its moves and
    counts from there (-1: its whole history)."""
    lines = _sale_lines(conn, since)
    w = _Writes()
    for key, h0 in sorted(since.items()):
        store, sku = key
        tail = conn.execute(
            "SELECT hlc FROM st_oversell_tail WHERE sku = ? AND store = ?", (sku, store)
        ).fetchone()
        for table, col in (("st_oversold", "hlc"), ("st_oversell_runs", "run_hlc")):
            conn.execute(
                f"DELETE FROM {table} WHERE sku = ? AND store = ? AND {col} >= ?", (sku, store, h0)
            )
        if not _stocked(conn, key):  # an undone resolution took its last move away
            conn.execute("DELETE FROM st_oversell_tail WHERE sku = ? AND store = ?", (sku, store))
            continue
        steps = sorted(lines[key] + _moves_and_counts(conn, key, h0))
        level = _level_before(conn, key, h0, steps)
        run = _open_run(conn, key, level, h0)
        if run is not None:
            w.runs[(store, sku, run)] = None  # open again: whatever ended it is replayed
        run = w.walk(key, steps, level, run)
        w.tail(key, max([s[0] for s in steps[-1:]] + ([tail[0]] if tail else []), default=-1), run)
    w.flush(conn)


def _stocked(conn: sqlite3.Connection, key: Key) -> bool:
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
            for row in conn.execute(_LINES_OF_ONE, (h0, store, sku_needle(sku), sku))
        )
    else:
        keys = _json(sorted(since)).decode()
        rows = conn.execute(_LINES_OF_MANY, (min(since.values()), keys))
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
