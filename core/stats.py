"""A log file's counts, version vector and size (`read_stats`), from any connection to
it: what `EventLog.stats` answers status polls with, and what ops tools print."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from core import segments

__all__ = ["LogStats", "read_stats"]


@dataclass(frozen=True)
class LogStats:
    path: str
    replica_id: str
    events: int
    pending: int
    quarantined: int
    version_vector: dict[str, int]
    file_bytes: int
    quarantine_dropped: int = 0  # oldest evidence dropped past the quarantine's cap


def read_stats(conn: sqlite3.Connection, path: Path, *, exact: bool = True) -> LogStats:
    """Counts, version vector and file size of a log, from any connection to it.

    `exact=False` counts events as the sum over origins of head - base: what a log
    whose chains are intact (as `verify` checks) holds, in O(origins) instead of a
    scan of every event (tens of ms per million, on every status poll).
    """

    def count(table: str) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def events_from_heads() -> int:
        sql = "SELECT COALESCE(SUM(seq - base), 0) FROM heads"
        return int(conn.execute(sql).fetchone()[0])

    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    return LogStats(
        path=str(path),
        replica_id=str(meta.get("replica_id", "")),
        events=segments.count(conn) if exact else events_from_heads(),
        pending=count("pending"),
        quarantined=count("quarantine"),
        quarantine_dropped=int(meta.get("quarantine_dropped", 0)),
        version_vector=dict(conn.execute("SELECT origin, seq FROM heads").fetchall()),
        file_bytes=_file_bytes(path),
    )


def _file_bytes(path: Path) -> int:
    """The database with its -wal and -shm (not `name*`: that counted `log.db.dead` too)."""
    files = (path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm"))
    return sum(f.stat().st_size for f in files if f.exists())
