"""The tills' links as each HQ ingest worker sees them, shared through PostgreSQL.

A worker hears, pulls and answers only its own stores' tills, so only it knows when
one last announced, how many of its events are not at HQ yet and for how long. HQ's
dashboard is served by worker 0: every other worker writes its tills' part of its
sync status (`Replica.sync_status()["origins"]`) into `hq_links` every
PUBLISH_EVERY seconds, and worker 0 reads them back beside its own, each `last_seen`
aged by the time since the row was written (a worker that died leaves rows that age
into "offline"; nothing claims a till online that nobody hears).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

__all__ = ["PUBLISH_EVERY", "merged", "publish", "publish_forever", "read_shared"]

log = logging.getLogger(__name__)
PUBLISH_EVERY = 2.0  # seconds; the dashboard polls every 2 s, tills announce every 5 s

Status = Mapping[str, Any]


async def publish(conn: AsyncConnection[Any], worker: str, origins: Mapping[str, Status]) -> None:
    """Upsert each origin's status as `worker` saw it now."""
    rows = [(origin, worker, Jsonb(dict(status))) for origin, status in sorted(origins.items())]
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO hq_links (origin, worker, status) VALUES (%s, %s, %s)"
            " ON CONFLICT (origin) DO UPDATE SET worker = excluded.worker,"
            " status = excluded.status, reported_at = now()",
            rows,
        )


async def publish_forever(
    dsn: str, worker: str, origins: Callable[[], Mapping[str, Status]]
) -> None:
    """Publish `origins()` every PUBLISH_EVERY seconds until cancelled; a database that
    is away is tried again at the next turn."""
    conn: AsyncConnection[Any] | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed:
                    conn = await AsyncConnection.connect(dsn, autocommit=True)
                await publish(conn, worker, origins())
            except psycopg.Error as e:
                log.warning("links of worker %s not published: %s", worker, str(e).strip())
                conn = None
            await asyncio.sleep(PUBLISH_EVERY)
    finally:
        if conn is not None:
            await conn.close()


def read_shared(conn: psycopg.Connection[Any], skip: Callable[[str], bool]) -> dict[str, Status]:
    """The published statuses of the origins `skip` leaves, `last_seen` aged."""
    out: dict[str, Status] = {}
    for origin, status, age in conn.execute(
        "SELECT origin, status, extract(epoch FROM now() - reported_at)::float8 FROM hq_links"
    ).fetchall():
        if skip(origin):
            continue
        seen = status.get("last_seen")
        out[origin] = {**status, "last_seen": None if seen is None else seen + age}
    return out


def merged(own: Mapping[str, Any], shared: Mapping[str, Status]) -> dict[str, Any]:
    """`own` sync status with the shared origins added (its own win)."""
    return {**own, "origins": {**shared, **(own.get("origins") or {})}}
