"""Library behind the ops commands (`tillmesh log replay|export|import|diff|compact|...`):
opening a replica's database, the fold it is configured with, scratch state, and
compaction. Each other command has its module: `ops.replay`, `ops.diff`, `ops.export`
(export and import) and `ops.restore`.

Every function works on database files directly, never on the network. Read-only
ones open the file read-only (WAL lets them run beside a live replica); writers
(`import_file`, `compact_db`, `rebuild_db`, `restore_db`) want the replica stopped:
its in-memory chain heads would not see what they change.

State is always the real `StoreState` fold: replay and scoped diffs fold the chosen
events into a scratch database, which is valid because the fold depends only on the
set of events, never on their order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from conflict import cards, schema
from conflict.policies import state_fold
from conflict.state import StoreState
from core import compact, hlc_order, segments
from core.compact import CompactReport, fold_rows, load_snapshot, read_heads
from core.errors import DatabaseLocked, StorageError
from core.events import HQ
from core.sqlite import file_uri, open_sync, translate
from replicas.sync.protocol import holds

__all__ = [
    "STATE_TABLES",
    "Cut",
    "Progress",
    "Scope",
    "compact_db",
    "compaction_floor",
    "compaction_plan",
    "cut_rows",
    "ensure_stopped",
    "fold_for_writing",
    "new_scratch",
    "open_log",
    "rebuild_db",
    "replica_of",
    "scope_of",
    "scratch_state",
]

STATE_TABLES = tuple(schema.TABLES)
Progress = Callable[[int], None]
Scope = Callable[[str], bool]
Cut = tuple[int, str, int]  # (hlc, origin, seq): the total order replay cuts in


# --- opening ---------------------------------------------------------------------------


def open_log(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """A connection to an existing replica database, with a clear error if it is not one."""
    if not path.exists():
        raise StorageError(str(path), "no such database")
    conn = open_sync(path, readonly=not write)
    try:
        conn.execute("SELECT origin, seq, hash, base FROM heads LIMIT 1").fetchall()
        conn.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
    except sqlite3.Error as e:
        conn.close()
        if "no such" in str(e):
            raise StorageError(str(path), "not a tillmesh log (no heads/meta table)") from e
        raise translate(path, e) from e
    return conn


def replica_of(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'replica_id'").fetchone()
    return str(row[0]) if row else None


def scope_of(replica_id: str | None) -> Scope:
    """Origins a replica holds; an unnamed database is taken to hold everything."""
    return holds(replica_id or HQ)


def fold_for_writing(conn: sqlite3.Connection) -> StoreState:
    """The fold to open an EventLog with, refusing one that would rebuild away a snapshot."""
    fold = state_fold(conn)
    row = conn.execute("SELECT value FROM meta WHERE key = 'fold_version'").fetchone()
    if compact.has_snapshot(conn) and (row is None or int(row[0]) != fold.version):
        raise StorageError(
            "log", "compacted log made by another fold version: opening it would lose history"
        )
    return fold


# --- scratch state -----------------------------------------------------------------------


def scratch_state(
    conn: sqlite3.Connection, scope: Scope, cut: Cut | None = None
) -> sqlite3.Connection:
    """An in-memory database holding the state of the in-scope events up to `cut`."""
    fold = state_fold(conn)
    scratch = new_scratch(conn, fold, scope, cut)
    rows = ((raw, flags) for raw, flags, _ in cut_rows(conn, scope, cut))
    fold_rows(scratch, fold, rows)
    return scratch


def new_scratch(
    conn: sqlite3.Connection, fold: StoreState, scope: Scope, cut: Cut | None
) -> sqlite3.Connection:
    """An in-memory database with the state tables, holding the log's snapshot if any."""
    scratch = sqlite3.connect(":memory:", isolation_level=None)
    fold.create_tables(scratch)
    if compact.has_snapshot(conn):
        _check_snapshot_usable(conn, scope, cut)
        load_snapshot(conn, scratch, STATE_TABLES)
        fold.create_tables(scratch)  # derives what the fold keeps beside the snapshot
    return scratch


def _check_snapshot_usable(conn: sqlite3.Connection, scope: Scope, cut: Cut | None) -> None:
    """A snapshot holds every origin's compacted events: usable only if the cut takes them all."""
    heads = read_heads(conn)
    outside = [o for o in heads if not scope(o)]
    if outside:
        detail = f"log is compacted; its snapshot cannot be limited to a scope ({outside[0]})"
        raise StorageError("snapshot", detail)
    for origin, head in heads.items():
        if head.base == 0 or cut is None:
            continue
        hlc = segments.hlc_at(conn, origin, head.base + 1)
        if hlc is None or (hlc, origin, head.base + 1) > cut:
            raise StorageError(
                "replay",
                f"events of {origin} up to seq {head.base} were compacted away; "
                "replay this point on HQ's database",
            )


def cut_rows(
    conn: sqlite3.Connection, scope: Scope, cut: Cut | None
) -> Iterator[tuple[bytes, int, int]]:
    """(raw, flags, hlc) of the in-scope events up to `cut`, in (hlc, origin, seq) order."""
    merged = hlc_order.in_hlc_order(conn, [o for o in segments.origins(conn) if scope(o)])
    if merged is not None:
        for origin, seq, hlc, _, flags, _, raw in merged:
            if cut is not None and (hlc, origin, seq) > cut:
                return
            yield raw, flags, hlc
        return
    where, params = ("WHERE (hlc, origin, seq) <= (?, ?, ?)", cut) if cut else ("", ())
    cursor = conn.execute(
        f"SELECT raw, flags, hlc, origin FROM events {where} ORDER BY hlc, origin, seq", params
    )
    while rows := cursor.fetchmany(2000):
        for raw, flags, hlc, origin in rows:
            if scope(origin):
                yield raw, flags, hlc


# --- compaction --------------------------------------------------------------------------------


def compaction_floor(
    conn: sqlite3.Connection, vectors: Mapping[str, Mapping[str, int]]
) -> dict[str, int]:
    """Per origin, what every known replica holding it (HQ required) holds durably,
    and no further than below its oldest deferred card payment still to forward: the
    forwarder reads the card token from that sale's event."""
    floor = compact.stable_floor(list(read_heads(conn)), vectors, holds, HQ)
    for origin, keep_below in cards.forwarding_floor(conn).items():
        if origin in floor:
            floor[origin] = min(floor[origin], keep_below)
    return floor


def compaction_plan(
    conn: sqlite3.Connection, floor: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    heads = read_heads(conn)
    return {o: (heads[o].base, b) for o, b in compact.plan(heads, floor).items()}


def compact_db(
    conn: sqlite3.Connection,
    vectors: Mapping[str, Mapping[str, int]],
    progress: Progress | None = None,
) -> tuple[dict[str, int], CompactReport]:
    """Snapshot and drop what every known replica (HQ included) holds; returns floor, report."""
    floor = compaction_floor(conn, vectors)
    report = compact.compact(conn, state_fold(conn), STATE_TABLES, floor, progress)
    return floor, report


def rebuild_db(conn: sqlite3.Connection, progress: Progress | None = None) -> int:
    return compact.rebuild(conn, state_fold(conn), STATE_TABLES, progress)


def ensure_stopped(path: Path, instead: str) -> None:
    """Refuse (DatabaseLocked) while a process, a running replica, has `path` open.

    A running replica keeps its log open, and an exclusive-mode connection then cannot
    begin a write. `instead` says what to do rather than stop it (e.g. "resolve through
    its HTTP API").
    """
    # mode=rw: never create the file; file_uri: a `#` or `?` in the path names this file
    probe = sqlite3.connect(file_uri(path, mode="rw"), uri=True, isolation_level=None, timeout=0.5)
    try:
        probe.execute("PRAGMA locking_mode=EXCLUSIVE")
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as e:
        detail = f"the replica is running (the file is in use): stop it, or {instead}"
        raise DatabaseLocked(str(path), detail) from e
    finally:
        probe.close()
