"""The SQLite boundary: connections, pragmas, migrations, and sqlite3 -> tillmesh errors.

The log does its work in batches of whole transactions. aiosqlite runs every call in
one worker thread per connection; `run_in_thread` hands that thread a whole batch
function, so a group commit of a thousand events costs one thread hop instead of
thousands (an await per statement costs ~300 µs here). aiosqlite has no public
name for this, so it is done here, once, against the pinned version.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import aiosqlite

from tillmesh.core.errors import DatabaseCorrupt, DatabaseLocked, SchemaTooNew, StorageError

__all__ = [
    "Migration",
    "connect",
    "migrate",
    "open_sync",
    "run_in_thread",
    "translate",
]

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]

_WRITER_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # an acknowledged sale survives power loss
    "PRAGMA busy_timeout=5000",
    "PRAGMA cache_size=-16000",  # 16 MB: bounded, so RSS does not grow with history
    # Checkpoint every ~40 MB of WAL instead of 4 MB: a checkpoint (run inside a COMMIT,
    # so on the ingest path) then copies each hot page (index interiors, stock rows)
    # once for ten times as many batches: ~14% less wall time in ingest's SQL. The
    # WAL is fsynced at every commit either way, so durability does not change.
    "PRAGMA wal_autocheckpoint=10000",
)
_READER_PRAGMAS = ("PRAGMA busy_timeout=5000", "PRAGMA query_only=ON", "PRAGMA cache_size=-8000")


def translate(path: str | Path, e: sqlite3.Error) -> StorageError:
    """Map a sqlite3 error to the tillmesh error a caller can act on."""
    text = str(e)
    if "locked" in text or "busy" in text:
        return DatabaseLocked(str(path), text)
    if isinstance(e, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return DatabaseCorrupt(str(path), text)
    return StorageError(str(path), text)


async def connect(path: str | Path, *, readonly: bool = False) -> aiosqlite.Connection:
    """An aiosqlite connection in autocommit mode; transactions are explicit BEGINs."""
    if readonly and not Path(path).exists():
        raise StorageError(str(path), "no such database")
    try:
        conn = await aiosqlite.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise translate(path, e) from e
    try:
        for pragma in _READER_PRAGMAS if readonly else _WRITER_PRAGMAS:
            await conn.execute(pragma)
    except sqlite3.Error as e:
        await conn.close()  # else its worker thread outlives us and blocks interpreter exit
        raise translate(path, e) from e
    return conn


def open_sync(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A plain sqlite3 connection, for tools that work on a database offline."""
    if readonly and not Path(path).exists():
        raise StorageError(str(path), "no such database")
    try:
        uri = f"file:{Path(path).resolve()}{'?mode=ro' if readonly else ''}"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        for pragma in _READER_PRAGMAS if readonly else _WRITER_PRAGMAS:
            conn.execute(pragma)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        raise translate(path, e) from e
    return conn


async def run_in_thread(
    conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T], path: str | Path = "?"
) -> T:
    """Run `fn(sqlite3_connection)` in the connection's worker thread."""
    raw: sqlite3.Connection = conn._conn
    try:
        result: T = await conn._execute(fn, raw)  # type: ignore[no-untyped-call]
    except sqlite3.Error as e:
        raise translate(path, e) from e
    return result


def migrate(conn: sqlite3.Connection, path: str, migrations: Sequence[Migration]) -> int:
    """Bring the file to the newest schema, one transaction per step (PRAGMA user_version)."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > len(migrations):
        raise SchemaTooNew(path, found, len(migrations))
    for version in range(found, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            migrations[version](conn)
            conn.execute(f"PRAGMA user_version={version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)
