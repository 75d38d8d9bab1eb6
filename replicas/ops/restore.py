"""Restore (`tillmesh log restore`): a replacement replica's database, built from HQ's
or a peer's and keeping the replica's id, so its next append continues its own chain.

The new database is built beside the target (`<name>.restoring`) and moved into place
only when complete. A database it replaces (`--force`) is moved, with its `-wal`, into
`<name>.replaced-N/`, never deleted: its last sales may be on no other replica. A
compacted source seeds its snapshot into the new database, which needs a source of the
same scope (HQ for HQ, a till of the same store for a till).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from conflict import queries
from conflict.state import StoreState
from core import compact
from core.compact import HeadRow, read_heads
from core.errors import StorageError
from core.events import HQ
from core.log import EventLog
from core.signing import Verifier
from core.sqlite import open_sync
from replicas.ops.common import (
    STATE_TABLES,
    Progress,
    ensure_stopped,
    fold_for_writing,
    open_log,
    replica_of,
)
from replicas.sync.protocol import holds

__all__ = ["RestoreReport", "restore_db"]


@dataclass
class RestoreReport:
    replica_id: str
    source: str
    events: int = 0
    own_seq: int = 0  # the till's own head: its next append gets own_seq + 1
    seeded: dict[str, int] = field(default_factory=dict)  # origins started from a snapshot
    rejected: list[str] = field(default_factory=list)
    digest: str = ""
    set_aside: str | None = None  # where --force moved the database it replaced


async def restore_db(
    target: Path, source: Path, replica_id: str, *, force: bool = False,
    progress: Progress | None = None, verifier: Verifier | None = None,
) -> RestoreReport:  # fmt: skip
    """A replacement replica's database, from HQ's or a peer's, keeping the replica's id;
    with a `verifier` (the site's keys), only events their origins signed are copied."""
    _check_target(target, force)
    tmp = target.with_name(target.name + ".restoring")
    with closing(open_log(source)) as src:
        report = RestoreReport(replica_id, replica_of(src) or HQ)
        _check_source(report.source, replica_id)
        fold = fold_for_writing(src)
        _remove_db(tmp)
        try:
            await _build(src, tmp, fold, report, progress, verifier)
        except BaseException:
            _remove_db(tmp)
            raise
    report.set_aside = _set_aside(target)
    os.replace(tmp, target)
    return report


def _check_target(target: Path, force: bool) -> None:
    wal = _sibling(target, "-wal")
    if not target.exists() and wal.exists() and wal.stat().st_size > 0:
        # A database moved away without its -wal: the -wal may hold its last sales.
        detail = (
            f"{wal.name} holds commits of a database that is not here (moved without"
            " it?): put it back beside its database, or move it away yourself"
        )
        raise StorageError(str(target), detail)
    if _has_content(target) and not force:
        raise StorageError(str(target), "exists and is not empty; --force replaces it")
    if target.exists():  # a live till would go on writing into the folder it is moved to
        ensure_stopped(target, "restore onto another file")


def _has_content(db: Path) -> bool:
    return any(p.exists() and p.stat().st_size > 0 for p in (db, _sibling(db, "-wal")))


def _set_aside(target: Path) -> str | None:
    """Move a replaced database (with its -wal: it may hold sales no peer has) into a
    folder of its own beside it, never delete it; returns that folder, if any."""
    if not _has_content(target):
        _remove_db(target)
        return None
    n = 1
    while (folder := target.with_name(f"{target.name}.replaced-{n}")).exists():
        n += 1
    folder.mkdir()
    for suffix in _SUFFIXES:
        if (old := _sibling(target, suffix)).exists():
            os.replace(old, folder / old.name)
    return str(folder)


def _sibling(db: Path, suffix: str) -> Path:
    return db.with_name(db.name + suffix)


def _check_source(source_id: str, replica_id: str) -> None:
    if source_id != HQ and (replica_id == HQ or not holds(replica_id)(source_id)):
        detail = f"holds less than {replica_id!r}: restore from HQ or a till of the same store"
        raise StorageError(source_id, detail)


async def _build(
    src: sqlite3.Connection, tmp: Path, fold: StoreState, report: RestoreReport,
    progress: Progress | None, verifier: Verifier | None,
) -> None:  # fmt: skip
    scope = holds(report.replica_id)
    heads = {o: h for o, h in read_heads(src).items() if scope(o)}
    async with await EventLog.open(tmp, report.replica_id, fold, in_scope=scope):
        pass  # creates the schema and the state tables
    _seed_compacted(src, tmp, heads, report)
    async with await EventLog.open(
        tmp, report.replica_id, fold, in_scope=scope, verifier=verifier
    ) as log:
        await _copy_events(src, log, heads, report, progress)
        report.own_seq = log.head(report.replica_id)[0]
    report.digest = _finish(tmp)


def _finish(tmp: Path) -> str:
    """The new database's digest, with its WAL merged into the main file and gone.

    Only the main file is moved into place: a -wal/-shm left under the temporary name
    is clutter at best, and commits still in a -wal would be lost by the move. A
    read-only connection cannot checkpoint or delete them at close (the digest used
    to be read through one, leaving both), so a writer checkpoints and closes last.
    """
    with closing(open_sync(tmp)) as conn:
        digest = queries.state_digest(conn)
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy:  # nothing else has the new file open: a bug, never a reason to lose events
        raise StorageError(str(tmp), "could not checkpoint the restored database")
    for suffix in ("-wal", "-shm"):  # gone at the close; empty if anything is left
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    return digest


def _seed_compacted(
    src: sqlite3.Connection, tmp: Path, heads: Mapping[str, HeadRow], report: RestoreReport
) -> None:
    """Start the compacted origins from the source's snapshot (a same-scope source only)."""
    compacted = [o for o, h in heads.items() if h.base]
    if not compacted:
        return
    if not _same_scope(report.source, report.replica_id):
        raise StorageError(
            report.source, f"compacted ({compacted[0]} and more); restore from HQ instead"
        )
    with closing(open_sync(tmp)) as dst:
        report.seeded = compact.seed_from(src, dst, STATE_TABLES, heads)


async def _copy_events(
    src: sqlite3.Connection,
    log: EventLog,
    heads: Mapping[str, HeadRow],
    report: RestoreReport,
    progress: Progress | None,
) -> None:
    """Every kept event of every origin, ingested as from a peer: chains are checked."""
    for origin, head in heads.items():
        for raws in _raw_chunks(src, origin, head.base + 1, head.seq):
            result = await log.ingest_raw(raws, peer=f"restore:{report.source}")
            report.events += len(result.accepted)
            report.rejected += [str(e) for e in result.rejected]
            if progress is not None:
                progress(len(raws))


def _same_scope(a: str, b: str) -> bool:
    return a == b == HQ or (HQ not in (a, b) and holds(a)(b))


def _raw_chunks(
    conn: sqlite3.Connection, origin: str, first: int, last: int
) -> Iterator[Sequence[bytes]]:
    cursor = conn.execute(
        "SELECT raw FROM events WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (origin, first, last),
    )
    while rows := cursor.fetchmany(2000):
        yield [raw for (raw,) in rows]


_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _remove_db(path: Path) -> None:
    for suffix in _SUFFIXES:
        _sibling(path, suffix).unlink(missing_ok=True)
