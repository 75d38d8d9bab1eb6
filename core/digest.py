"""Table digests kept up to date by triggers: what a table holds, as a set of rows, in
32 bytes, maintained in the same transaction as every write to the table.

A row hashes to h(row) = blake2b-256 of its msgpack array of column values, read as an
integer; a table's digest is the sum of its rows' hashes mod 2^256 (a multiset hash,
so it depends on which rows the table holds, never on the order they were written or
read in). Triggers on INSERT, DELETE and UPDATE add and subtract row hashes in
`digest_acc`, so reading a table's digest is one row, not a scan; `scan_digest`
computes the same value from the rows themselves (`tillmesh state --digest --recompute`).

Generic over tables: `maintain` reads each table's columns from SQLite, so a table whose
columns change gets matching triggers when it is re-created. A `where` predicate per
table (SQL over its columns) leaves rows out of its digest, e.g. rows that mean nothing.

A table may instead be *counted by its writer* on insert (`counted`): it gets no INSERT
trigger, and the code that inserts its rows adds their hashes with one `add_rows` per
batch. The trigger calls back into Python once per row (~3 µs, most of a sale's digest
cost at ingest: issue 19); `add_rows` hashes the same values in Python and writes the
accumulator once. DELETE and UPDATE keep their triggers, and a bulk insert that is not
the writer's (a snapshot loaded) recounts the table by scan (`recount`). Whether a table
is counted is read back from its triggers, so nothing else records it.

Every connection that writes a maintained table needs the hash functions (`register`):
`core.sqlite` registers them on each connection it opens; one without them fails loudly
("no such function"), never silently drifts. `register` also turns on recursive
triggers, without which the rows an `INSERT OR REPLACE` deletes would not be subtracted.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import msgspec

__all__ = [
    "ACC_TABLE",
    "ZERO",
    "add_rows",
    "combine",
    "drop",
    "maintain",
    "read_accs",
    "recount",
    "register",
    "row_hash",
    "scan_digest",
    "suspended",
]

ACC_TABLE = "digest_acc"
_MOD = 1 << 256
ZERO = bytes(32)
_encode = msgspec.msgpack.Encoder().encode
_blake2b = hashlib.blake2b


def row_hash(row: Iterable[object]) -> int:
    return int.from_bytes(_blake2b(_encode(tuple(row)), digest_size=32).digest())


def _add(acc: bytes, *row: object) -> bytes:
    return ((int.from_bytes(acc) + row_hash(row)) % _MOD).to_bytes(32)


def _sub(acc: bytes, *row: object) -> bytes:
    return ((int.from_bytes(acc) - row_hash(row)) % _MOD).to_bytes(32)


def _swap(acc: bytes, *old_new: object) -> bytes:
    """acc - h(old) + h(new): an UPDATE in one call (the row's halves are equal length)."""
    n = len(old_new) // 2
    delta = row_hash(old_new[n:]) - row_hash(old_new[:n])
    return ((int.from_bytes(acc) + delta) % _MOD).to_bytes(32)


def register(conn: sqlite3.Connection) -> None:
    """Give `conn` the hash functions the triggers call, and recursive triggers."""
    conn.create_function("digest_add", -1, _add, deterministic=True)
    conn.create_function("digest_sub", -1, _sub, deterministic=True)
    conn.create_function("digest_swap", -1, _swap, deterministic=True)
    conn.execute("PRAGMA recursive_triggers = ON")


# --- schema ------------------------------------------------------------------------------


def maintain(
    conn: sqlite3.Connection,
    tables: Iterable[str],
    where: Mapping[str, str],
    counted: Iterable[str] = (),
) -> None:
    """Create `digest_acc` and each table's triggers if missing. A table that has no
    accumulator yet (it held rows before its triggers existed) gets one by scan. The
    tables in `counted` get no INSERT trigger: their writer calls `add_rows`."""
    register(conn)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {ACC_TABLE} (tbl TEXT PRIMARY KEY, acc BLOB NOT NULL,"
        " predicate TEXT NOT NULL) WITHOUT ROWID"
    )
    by_writer = set(counted)
    for table in tables:
        predicate = where.get(table)
        if table in by_writer:
            conn.execute(f"DROP TRIGGER IF EXISTS {table}__digest_ins")
        _create_triggers(conn, table, _columns(conn, table), predicate, table in by_writer)
        known = conn.execute(f"SELECT 1 FROM {ACC_TABLE} WHERE tbl = ?", (table,)).fetchone()
        if known is None:
            acc = _scan_table(conn, table, predicate)
            conn.execute(f"INSERT INTO {ACC_TABLE} VALUES (?, ?, ?)", (table, acc, predicate or ""))


def add_rows(conn: sqlite3.Connection, table: str, rows: Iterable[Iterable[object]]) -> None:
    """Add rows just inserted into a table its writer counts (`maintain(counted=...)`):
    exactly the values stored, in the table's column order, each row once. Only for a
    table with no `where` predicate (every row counts)."""
    total = sum(row_hash(row) for row in rows)
    if not total:  # no rows (a batch with no sale): nothing to write
        return
    (acc,) = conn.execute(f"SELECT acc FROM {ACC_TABLE} WHERE tbl = ?", (table,)).fetchone()
    acc = ((int.from_bytes(acc) + total) % _MOD).to_bytes(32)
    conn.execute(f"UPDATE {ACC_TABLE} SET acc = ? WHERE tbl = ?", (acc, table))


def recount(conn: sqlite3.Connection, table: str) -> None:
    """After rows went into a counted table by any other way than its writer's (a
    snapshot loaded): its accumulator from a scan. A table with its INSERT trigger (or
    none maintained) is left alone: its triggers counted every row."""
    maintained = _maintained(conn)
    if table in maintained and _counted_by_writer(conn, table):
        acc = _scan_table(conn, table, maintained[table])
        conn.execute(f"UPDATE {ACC_TABLE} SET acc = ? WHERE tbl = ?", (acc, table))


def _counted_by_writer(conn: sqlite3.Connection, table: str) -> bool:
    """Whether the table's digest triggers are there without the INSERT one."""
    names = {
        str(n)
        for (n,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?", (table,)
        )
    }
    return f"{table}__digest_del" in names and f"{table}__digest_ins" not in names


@contextmanager
def suspended(conn: sqlite3.Connection) -> Iterator[None]:
    """For a bulk write (a rebuild): no triggers while it runs, then each maintained
    table's accumulator recomputed by one scan and its triggers re-created. A hash per
    row either way, without an UPDATE of `digest_acc` per row. Run it inside the
    caller's transaction: if the write fails, its rollback restores the triggers."""
    maintained = _maintained(conn)
    by_writer = {t for t in maintained if _counted_by_writer(conn, t)}
    for (name,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE ? ESCAPE '!'",
        ("%!_!_digest!_%",),
    ).fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    yield
    for table, predicate in maintained.items():
        if _columns_or_none(conn, table) is None:
            continue  # dropped by the bulk write: its accumulator went with the table
        acc = _scan_table(conn, table, predicate)
        conn.execute(f"UPDATE {ACC_TABLE} SET acc = ? WHERE tbl = ?", (acc, table))
        _create_triggers(conn, table, _columns(conn, table), predicate, table in by_writer)


def _maintained(conn: sqlite3.Connection) -> dict[str, str | None]:
    try:
        rows = conn.execute(f"SELECT tbl, predicate FROM {ACC_TABLE}").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {str(t): (str(p) or None) for t, p in rows}


def drop(conn: sqlite3.Connection) -> None:
    """Forget every accumulator (the tables' triggers go when the tables are dropped)."""
    conn.execute(f"DROP TABLE IF EXISTS {ACC_TABLE}")


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    columns = _columns_or_none(conn, table)
    if columns is None:
        raise sqlite3.OperationalError(f"no such table: {table}")
    return columns


def _columns_or_none(conn: sqlite3.Connection, table: str) -> list[str] | None:
    columns = [str(row[1]) for row in conn.execute(f"PRAGMA table_info({table})")]
    return columns or None


def _qualifies(row: str, columns: list[str], predicate: str | None) -> str:
    """A WHEN clause: `predicate` over the trigger's OLD or NEW row, by column name."""
    if predicate is None:
        return ""
    named = ", ".join(f"{row}.{c} AS {c}" for c in columns)
    return f" WHEN EXISTS (SELECT 1 FROM (SELECT {named}) WHERE {predicate})"


def _create_triggers(
    conn: sqlite3.Connection,
    table: str,
    columns: list[str],
    predicate: str | None,
    by_writer: bool = False,
) -> None:
    old = ", ".join(f"OLD.{c}" for c in columns)
    new = ", ".join(f"NEW.{c}" for c in columns)
    target = f"UPDATE {ACC_TABLE} SET acc = {{}} WHERE tbl = '{table}'"
    bodies = {
        "ins": ("INSERT", "NEW", f"digest_add(acc, {new})"),
        "del": ("DELETE", "OLD", f"digest_sub(acc, {old})"),
    }
    if predicate is None:
        bodies["upd"] = ("UPDATE", "", f"digest_swap(acc, {old}, {new})")
    else:  # each half counts only if its row qualifies
        bodies["upd_old"] = ("UPDATE", "OLD", f"digest_sub(acc, {old})")
        bodies["upd_new"] = ("UPDATE", "NEW", f"digest_add(acc, {new})")
    if by_writer:  # `add_rows` counts its inserts
        del bodies["ins"]
    for name, (event, row, call) in bodies.items():
        when = _qualifies(row, columns, predicate) if row else ""
        conn.execute(
            f"CREATE TRIGGER IF NOT EXISTS {table}__digest_{name} AFTER {event} ON {table}"
            f"{when} BEGIN {target.format(call)}; END"
        )


# --- reading -----------------------------------------------------------------------------


def read_accs(conn: sqlite3.Connection, tables: Iterable[str]) -> dict[str, bytes] | None:
    """The maintained accumulators of `tables`, or None if any is not maintained here."""
    try:
        rows = dict(conn.execute(f"SELECT tbl, acc FROM {ACC_TABLE}").fetchall())
    except sqlite3.OperationalError:
        return None  # a database from before digests were maintained
    wanted = list(tables)
    if any(t not in rows for t in wanted):
        return None
    return {t: bytes(rows[t]) for t in wanted}


def _scan_table(conn: sqlite3.Connection, table: str, predicate: str | None) -> bytes:
    where = f" WHERE {predicate}" if predicate else ""
    total = 0
    cursor = conn.execute(f"SELECT * FROM {table}{where}")
    while rows := cursor.fetchmany(5000):
        for row in rows:
            total += row_hash(row)
    return (total % _MOD).to_bytes(32)


def scan_digest(
    conn: sqlite3.Connection, tables: Iterable[str], where: Mapping[str, str]
) -> dict[str, bytes]:
    """The accumulators computed from the rows: what the maintained ones must equal."""
    return {t: _scan_table(conn, t, where.get(t)) for t in tables}


def combine(accs: Mapping[str, bytes], order: Iterable[str]) -> str:
    """One hex digest of the tables' accumulators, in `order`."""
    h = _blake2b(digest_size=32)
    for table in order:
        h.update(_encode(table))
        h.update(accs[table])
    return h.hexdigest()
