"""The SQLite boundary: connections, pragmas, migrations, and sqlite3 -> tillmesh errors.

The log does its work in batches of whole transactions. aiosqlite runs every call in
one worker thread per connection; `run_in_thread` hands that thread a whole batch
function, so a group commit of a thousand events costs one thread hop instead of
thousands (an await per statement costs ~300 µs here). aiosqlite has no public
name for this, so it is done here, once, against the pinned version.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlencode

import aiosqlite

from core import digest
from core.errors import DatabaseCorrupt, DatabaseLocked, SchemaTooNew, StorageError

__all__ = [
    "Migration",
    "connect",
    "file_uri",
    "keep_private",
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
    if not readonly:
        keep_private(Path(path))
    try:
        conn = await aiosqlite.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        raise translate(path, e) from e
    try:
        for pragma in _READER_PRAGMAS if readonly else _WRITER_PRAGMAS:
            await conn.execute(pragma)
        await run_in_thread(conn, digest.register, path)  # the state tables' triggers use them
    except sqlite3.Error as e:
        await conn.close()  # else its worker thread outlives us and blocks interpreter exit
        raise translate(path, e) from e
    return conn


def keep_private(path: Path) -> None:
    """A log holds sales: its database is the owner's alone (0600) from the first byte,
    and SQLite gives the -wal and -shm it creates the database file's mode. A file an
    older build left readable to others is narrowed too (the writer owns it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    except OSError as e:
        raise StorageError(str(path), e.strerror or str(e)) from e
    else:
        os.close(fd)
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if part.stat().st_mode & 0o077:
                part.chmod(0o600)
        except FileNotFoundError:
            continue
        except PermissionError:  # not ours: SQLite says so when it opens it
            continue


def file_uri(path: str | Path, **query: str) -> str:
    """A `file:` URI naming exactly `path`, with `query` parameters (e.g. mode="ro").

    In a URI `#` starts a fragment, `?` the query and `%` an escape: a folder named
    `we#ird` would otherwise name the file `we` (and SQLite would create it). `as_uri`
    percent-encodes the absolute path, and SQLite decodes it back.
    """
    uri = Path(path).resolve().as_uri()
    return f"{uri}?{urlencode(query)}" if query else uri


def open_sync(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A plain sqlite3 connection, for tools that work on a database offline.

    `readonly` also reads a file in a folder this process cannot write (a read-only
    mount, another user's folder): see `_open_readonly`.
    """
    if readonly and not Path(path).exists():
        raise StorageError(str(path), "no such database")
    if readonly:
        return _open_readonly(Path(path))
    keep_private(Path(path))
    try:
        return _open_uri(file_uri(path), _WRITER_PRAGMAS)
    except sqlite3.Error as e:
        raise translate(path, e) from e


def _open_readonly(path: Path) -> sqlite3.Connection:
    """mode=ro, or, where that cannot work, immutable=1 if no one can be writing the file.

    A reader of a WAL database needs its `-shm` (and `-wal`) file, and creates them
    if absent: in a folder it cannot write, mode=ro then fails ("attempt to write a
    readonly database"). SQLite's documented way to read such a file is immutable=1:
    no locks, no -shm, and the -wal ignored. That is exact only for a quiescent file,
    so it is used only when the folder is unwritable and there is no WAL content:
    a connection in WAL mode keeps both -wal and -shm in existence while open, so
    neither a writer nor unmerged commits can exist (a till started *while* we read
    only appends to its own -wal; its main file changes at a checkpoint, ~40 MB later
    or when it stops). A live till's files (-wal and -shm present) keep to mode=ro,
    which reads them.
    """
    real = path.resolve()  # SQLite puts the -wal/-shm beside the file a symlink names
    try:
        return _open_uri(file_uri(real, mode="ro"), _READER_PRAGMAS)
    except sqlite3.Error as e:
        if not _unwritable_folder(real):
            raise translate(path, e) from e
        if _has_wal_content(real):
            detail = (
                "its folder is read-only and it has a write-ahead log (-wal) that only a "
                "writable folder lets SQLite read: copy the file with its -wal elsewhere"
            )
            raise StorageError(str(path), detail) from e
        if not _quiescent(real):
            raise translate(path, e) from e
    try:
        return _open_uri(file_uri(real, mode="ro", immutable="1"), _READER_PRAGMAS)
    except sqlite3.Error as e:
        raise translate(path, e) from e


def _open_uri(uri: str, pragmas: Sequence[str]) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        for pragma in pragmas:
            conn.execute(pragma)
        digest.register(conn)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _unwritable_folder(path: Path) -> bool:
    return not os.access(path.parent, os.W_OK)


def _has_wal_content(path: Path) -> bool:
    wal = _sidecar(path, "-wal")
    return wal.exists() and wal.stat().st_size > 0


def _quiescent(path: Path) -> bool:
    """No connection can have the file open in WAL mode: no -wal, or no -shm beside it."""
    return not (_sidecar(path, "-wal").exists() and _sidecar(path, "-shm").exists())


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
