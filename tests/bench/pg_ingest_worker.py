"""One HQ ingest worker on PostgreSQL fed pre-recorded frames, for the ingest bench.

`python -m tests.bench.pg_ingest_worker DSN SITE_DIR FRAMES K/N`: opens `PgLog` with the
site's key registry (signatures checked, as in HQ), loads the msgpack list of frames
(each a list of envelope bytes, one origin's pull window) and keeps those of its
shard's stores, prints `ready`, waits for a line on stdin, ingests them in order (two in flight) and
prints `done <seconds> <events> <CPU seconds>`, then waits for another line before it
disconnects (its server backend's CPU time is read meanwhile). Start-up stays out.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import msgspec

from core.events import decode_event
from replicas.hq.shard import Shard
from replicas.hq.store import PgLog
from replicas.site import load_site

T = TypeVar("T")


IN_FLIGHT = 2  # frames handed to the log at once, as sync's read-ahead does


async def in_flight(
    ingest: Callable[[list[bytes]], Awaitable[T]], frames: list[list[bytes]]
) -> list[T]:
    """`ingest` each frame in order, `IN_FLIGHT` at a time (the next is checked while the
    one before is written)."""
    slots = asyncio.Semaphore(IN_FLIGHT)
    tasks = []
    for frame in frames:
        await slots.acquire()
        task = asyncio.create_task(ingest(frame))
        task.add_done_callback(lambda _: slots.release())
        tasks.append(task)
    return list(await asyncio.gather(*tasks))


async def main(dsn: str, site_dir: Path, frames_file: Path, shard: Shard) -> None:
    registry = load_site(site_dir).key_registry()
    frames = msgspec.msgpack.decode(frames_file.read_bytes(), type=list[list[bytes]])
    mine = [f for f in frames if shard.owns(decode_event(f[0]).origin)]
    log = await PgLog.open(dsn, owns=shard.owns, verifier=registry)
    try:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        t0, cpu0 = time.perf_counter(), time.process_time()
        results = await in_flight(log.ingest_raw, mine)
        assert not any(r.rejected for r in results), [r.rejected[:1] for r in results]
        events = sum(len(r.stored) for r in results)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        print(f"done {wall:.6f} {events} {cpu:.6f}", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # the server's CPU is read meanwhile
    finally:
        await log.close()


if __name__ == "__main__":
    dsn, site_dir, frames_file, shard = sys.argv[1:5]
    asyncio.run(main(dsn, Path(site_dir), Path(frames_file), Shard.parse(shard)))
