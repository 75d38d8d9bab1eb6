"""Turn a log file back into schema 2 (one `events` table row per event), as every build
before segments (issue 19) wrote it: to test and time the migration of existing logs.

The DDL is not copied here: it is what the real schema-1 and schema-2 migrations create
(`core.schema.MIGRATIONS[:2]`, run on a scratch database), so this stays the layout those
builds wrote. The rows are the file's own events, bytes, hashes and flags; the state
tables, heads and meta are left as they are.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from core.schema import MIGRATIONS
from core.sqlite import migrate

__all__ = ["to_schema_2"]


def _schema_2_ddl() -> list[str]:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as scratch:
        migrate(scratch, ":memory:", MIGRATIONS[:2])
        return [
            sql
            for (sql,) in scratch.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'events' AND sql IS NOT NULL"
                " ORDER BY type DESC"  # the table before its index
            )
        ]


def to_schema_2(path: Path) -> int:
    """Rewrite the closed log at `path` to schema 2; returns the events it holds."""
    ddl = _schema_2_ddl()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TEMP TABLE kept AS SELECT origin, seq, hlc, type, flags, hash, raw"
            " FROM events ORDER BY origin, seq"
        )
        conn.execute("DROP VIEW events")  # its triggers go with it
        conn.execute("DROP TABLE segments")
        conn.execute("DROP TABLE event_flags")
        for statement in ddl:
            conn.execute(statement)
        conn.execute("INSERT INTO events SELECT * FROM kept")
        n = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        conn.execute("DROP TABLE kept")
        conn.execute("PRAGMA user_version = 2")
        conn.execute("COMMIT")
        conn.execute("VACUUM")
    return n
