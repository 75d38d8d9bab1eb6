"""The log's own tables, as an ordered list of migrations (PRAGMA user_version).

State tables belong to the fold (`conflict/`) and are created by it; they are
derived data and can always be rebuilt from the events. From schema 3 the events are
stored as segments (`core.segments`), shown one per row by the `events` view.
"""

from __future__ import annotations

import sqlite3

from core import segments
from core.sqlite import Migration

__all__ = ["MIGRATIONS"]


def _execute_each(conn: sqlite3.Connection, script: str) -> None:
    """executescript() would COMMIT the migration's transaction first; run statements singly."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_log_tables(conn: sqlite3.Connection) -> None:
    _execute_each(
        conn,
        """
        CREATE TABLE events (
            origin TEXT NOT NULL,
            seq    INTEGER NOT NULL,
            hlc    INTEGER NOT NULL,
            type   TEXT NOT NULL,
            flags  INTEGER NOT NULL,     -- core.fold.FLAG_*
            hash   BLOB NOT NULL,        -- event_hash(): what the next event's prev names
            raw    BLOB NOT NULL,        -- canonical envelope bytes, served as-is to peers
            PRIMARY KEY (origin, seq)
        ) WITHOUT ROWID;
        -- Per origin: highest contiguous seq held and its hash (the version vector).
        CREATE TABLE heads (
            origin TEXT PRIMARY KEY,
            seq    INTEGER NOT NULL,
            hash   BLOB NOT NULL,
            base   INTEGER NOT NULL DEFAULT 0  -- events <= base were compacted away
        ) WITHOUT ROWID;
        -- Events that arrived before their predecessor: held, not applied.
        CREATE TABLE pending (
            origin TEXT NOT NULL,
            seq    INTEGER NOT NULL,
            hash   BLOB NOT NULL,
            raw    BLOB NOT NULL,
            PRIMARY KEY (origin, seq)
        ) WITHOUT ROWID;
        -- Refused input kept as evidence: equivocations, broken chains, bad bodies.
        CREATE TABLE quarantine (
            id          INTEGER PRIMARY KEY,
            received_ms INTEGER NOT NULL,
            peer        TEXT NOT NULL,
            origin      TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            detail      TEXT NOT NULL,
            raw         BLOB NOT NULL
        );
        CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
        """,
    )


def _v2_hlc_index(conn: sqlite3.Connection) -> None:
    # Ops replay "as of 14:20" and dump --since/--until scan by time.
    conn.execute("CREATE INDEX events_by_hlc ON events (hlc)")


def _v3_segments(conn: sqlite3.Connection) -> None:
    # One row per contiguous run of an origin's events (issue 19); see core.segments.
    segments.migrate_events_table(conn)


MIGRATIONS: list[Migration] = [_v1_log_tables, _v2_hlc_index, _v3_segments]
