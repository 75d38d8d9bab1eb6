"""Export files (`tillmesh log export|import`): a log's events in one portable,
digest-checked file, and that file ingested into another replica's log.

Export reads one consistent snapshot beside a live writer; import writes through
`EventLog`, so chains and scope are checked as for events from a peer, and wants the
replica stopped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from core.clock import system_wall_ms
from core.compact import read_heads
from core.errors import TillmeshError
from core.events import Event, decode_event
from core.log import EventLog
from core.portable import ExportHeader, read_export, select_ranges, write_export
from core.signing import Verifier
from replicas.errors import SelectsNothing
from replicas.ops.common import (
    Progress,
    Scope,
    ensure_stopped,
    fold_for_writing,
    open_log,
    replica_of,
)
from replicas.sync.protocol import holds

__all__ = ["ImportReport", "export_db", "import_file"]

IMPORT_BATCH = 1000


def export_db(
    conn: sqlite3.Connection,
    out: Path,
    origin: str | None = None,
    since_hlc: int | None = None,
    progress: Progress | None = None,
) -> ExportHeader:
    """Write the log's events (all origins, or one; all, or from `since`) to a portable file."""
    conn.execute("BEGIN")  # one consistent snapshot beside a live writer
    try:
        if origin is not None:
            _check_origin(conn, origin)
        ranges = select_ranges(conn, None if origin is None else [origin], since_hlc)
        return write_export(
            conn, out, source=replica_of(conn) or "?", created_ms=system_wall_ms(),
            ranges=ranges, since_hlc=since_hlc, progress=progress,
        )  # fmt: skip
    finally:
        conn.execute("COMMIT")


def _check_origin(conn: sqlite3.Connection, origin: str) -> None:
    """An origin the log does not hold (a typo) is an error, not an empty export file."""
    if origin not in read_heads(conn):
        held = ", ".join(sorted(read_heads(conn))) or "none"
        raise SelectsNothing("export", f"no events of origin {origin!r} in this log ({held})")


@dataclass
class ImportReport:
    source: str
    events: int  # in the file
    accepted: int = 0
    duplicates: int = 0
    held: int = 0
    out_of_scope: int = 0  # skipped: not replicated to this replica
    rejected: list[str] = field(default_factory=list)


async def import_file(
    file: Path,
    db: Path,
    replica_id: str,
    progress: Progress | None = None,
    verifier: Verifier | None = None,
) -> ImportReport:
    """Ingest a verified export into an existing replica's log (idempotent), each event
    applied only once its origin's signature covers it (with a `verifier`: the site's
    keys). The replica must be stopped: a running one keeps its chain heads in memory,
    so its version vector would not show what was imported until it restarted."""
    header, raws = read_export(file)
    ensure_stopped(db, "import into a stopped replica (or let sync bring the events)")
    with closing(open_log(db)) as conn:
        fold = fold_for_writing(conn)
    report = ImportReport(header.source, len(raws))
    scope = holds(replica_id)
    events = _events_in_scope(raws, scope, report)
    async with await EventLog.open(db, replica_id, fold, in_scope=scope, verifier=verifier) as log:
        await _ingest_in_batches(log, events, report, progress)
    return report


def _events_in_scope(raws: Sequence[bytes], scope: Scope, report: ImportReport) -> list[Event]:
    """The file's events the replica holds; the others counted as rejected or out of scope."""
    events = []
    for raw in raws:
        try:
            ev = decode_event(raw)
        except TillmeshError as e:
            report.rejected.append(str(e))
            continue
        if scope(ev.origin):
            events.append(ev)
        else:
            report.out_of_scope += 1
    return events


async def _ingest_in_batches(
    log: EventLog, events: list[Event], report: ImportReport, progress: Progress | None
) -> None:
    for i in range(0, len(events), IMPORT_BATCH):
        batch = events[i : i + IMPORT_BATCH]
        result = await log.ingest(batch, peer=f"import:{report.source}")
        report.accepted += len(result.accepted)
        report.duplicates += result.duplicates
        report.held += result.held
        report.rejected += [str(e) for e in result.rejected]
        if progress is not None:
            progress(len(batch))
