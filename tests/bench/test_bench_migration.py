"""Issue 19: the time to migrate an existing (schema 2) log to segments, beside a raw
sqlite3 copy of the same events table in the same run (what rewriting the events costs
SQLite alone), and the open of the migrated log after it (nothing left to do).

`TILLMESH_MIGRATION_EVENTS` sets the log's size (default 100,000 sales of one till).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from conflict import queries
from conflict.state import StoreState
from core.log import EventLog
from tests.bench.big_log import append_sales
from tests.bench.conftest import table
from tests.schema2 import to_schema_2

pytestmark = pytest.mark.bench
EVENTS = int(os.environ.get("TILLMESH_MIGRATION_EVENTS", "100000"))


def _copy_events_table(path: Path) -> float:
    """Seconds for raw sqlite3 to write a copy of the schema-2 events table, durably."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE events_copy AS SELECT * FROM events")
        conn.execute("COMMIT")
        return time.perf_counter() - t0


async def _open_seconds(path: Path) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    log = await EventLog.open(path, "s1/t1", StoreState())
    seconds = time.perf_counter() - t0
    try:
        digest = await log.read(queries.state_digest)
        return seconds, digest, sum(log.version_vector().values())
    finally:
        await log.close()


async def test_bench_migration_to_segments(tmp_path: Path) -> None:
    current = tmp_path / "current.db"
    await append_sales(current, EVENTS)
    _, digest, n = await _open_seconds(current)
    old = tmp_path / "schema2.db"
    shutil.copy(current, old)
    assert to_schema_2(old) == n == EVENTS
    baseline = tmp_path / "baseline.db"
    shutil.copy(old, baseline)
    copy = _copy_events_table(baseline)
    size_before = old.stat().st_size
    migrate, migrated_digest, migrated_n = await _open_seconds(old)
    size_after = old.stat().st_size  # the events table's pages are free, kept for reuse
    assert (migrated_digest, migrated_n) == (digest, n)  # the same events, the same state
    reopen, _, _ = await _open_seconds(old)
    table(
        f"migration of a {n:,}-event log to segments (schema 2 -> 3)",
        [
            ("open + migrate", f"{migrate:.2f} s", f"{n / migrate:,.0f} events/s"),
            ("  raw sqlite3 copy of events", f"{copy:.2f} s", f"migrate = {migrate / copy:.1f}x"),
            ("  open once migrated", f"{reopen * 1000:.0f} ms", ""),
            ("  file size", f"{size_before >> 20} MB", f"after: {size_after >> 20} MB"),
        ],
    )
