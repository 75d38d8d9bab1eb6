"""A replica in the foreground: the process's main loop for `tillmesh till` and `hq`
(a till or HQ, an HQ ingest worker, a bare hub node), stopped by SIGTERM or SIGINT.

Imported by those commands only when they run: it loads the whole runtime (HTTP API,
NATS, metrics), which the ops commands that share the `tillmesh` parser do not need.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

from prometheus_client import CollectorRegistry

from replicas.hq.shard import Shard
from replicas.hub import HubNode
from replicas.metrics import ReplicaMetrics
from replicas.runtime import Replica
from replicas.site import load_site

__all__ = ["run_hq_worker", "run_hub_node", "run_replica"]


def run_hq_worker(
    root: Path,
    dsn: str,
    shard: Shard,
    nats_url: str | None,
    *,
    fresh: bool,
    verbose: bool,
    listen: tuple[str, int] | None = None,
) -> int:
    from replicas.hq.worker import HqWorker  # psycopg loads only for HQ on PostgreSQL

    worker = HqWorker(
        load_site(root), root, dsn, shard, fresh=fresh, nats_url=nats_url, listen=listen
    )
    _log_as(f"hq[{shard}]", verbose)
    asyncio.run(_run(worker))
    return 0


def run_replica(root: Path, replica_id: str, *, fresh: bool, verbose: bool = False) -> int:
    site = load_site(root)
    # The process's own metrics registry (prometheus_client's global one stays unused).
    metrics = ReplicaMetrics(CollectorRegistry())
    replica = Replica(site, replica_id, root, fresh=fresh, metrics=metrics)  # refuses unknown ids
    _log_as(replica_id, verbose)
    asyncio.run(_run(replica))
    return 0


def run_hub_node(root: Path, node: str, *, verbose: bool = False) -> int:
    hub = HubNode(load_site(root), node, root)  # refuses unknown nodes
    _log_as(node, verbose)
    asyncio.run(_run_hub(hub))
    return 0


def _log_as(name: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )


async def _run_hub(hub: HubNode) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with hub:
        assert hub.server is not None
        print(f"{hub.node} hub node up (nats-server pid {hub.server.pid})", flush=True)
        await stop.wait()


async def _run(replica: Replica) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await replica.start()
    try:
        if await _first(replica.ready, stop, replica.failed) is replica.ready:
            print(_serving(replica), flush=True)
            await _first(stop, replica.failed)
    finally:
        await replica.stop()
    if replica.failure is not None:  # raised once stopped: log closed, server reaped
        raise replica.failure


def _serving(replica: Replica) -> str:
    shard = getattr(replica, "shard", None)
    if shard is not None and not shard.front:
        url = replica.api_url()  # type: ignore[attr-defined]
        return f"{replica.replica_id} ingest worker {shard} up (PostgreSQL), metrics on {url}"
    return f"{replica.replica_id} serving on {replica.site.api_url(replica.replica_id)}"


async def _first(*events: asyncio.Event) -> asyncio.Event:
    """Whichever of `events` is set first."""
    waits = {asyncio.create_task(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[done.pop()]
