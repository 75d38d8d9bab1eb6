"""A minimal state fold for testing the log on its own (the real one is conflict.StoreState)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from core.fold import Accepted


class CountingFold:
    """Counts applied events per origin; can be told to fail, to test atomicity."""

    version = 1
    tables = ("st_counts",)

    def __init__(self) -> None:
        self.fail_on_type: str | None = None

    def create_tables(self, conn: sqlite3.Connection) -> None:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS st_counts (origin TEXT PRIMARY KEY, n INTEGER NOT NULL)"
        )

    def drop_tables(self, conn: sqlite3.Connection) -> None:
        conn.execute("DROP TABLE IF EXISTS st_counts")

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Accepted]) -> None:
        for item in batch:
            if item.event.type == self.fail_on_type:
                raise RuntimeError("fold failed on purpose")
            conn.execute(
                "INSERT INTO st_counts VALUES (?, 1) ON CONFLICT (origin) DO UPDATE SET n = n + 1",
                (item.event.origin,),
            )

    def settle(self, conn: sqlite3.Connection) -> bool:
        return False


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT origin, n FROM st_counts").fetchall())
