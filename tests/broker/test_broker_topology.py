"""Store clusters and the HQ leaf link, with real processes and real signals."""

from __future__ import annotations

import signal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from broker.config import free_port, hq_server_config
from broker.server import EmbeddedNatsServer
from broker.subjects import events_subject, pull_subject, pulls_to
from tests.broker.kit import (
    Collector,
    ServerPool,
    Site,
    connect_replica,
    hq_config,
    probe_until_seen,
    store_configs,
    wait_full_mesh,
    wait_leafs,
    wait_until,
)

TILLS = ["t1", "t2", "t3"]


async def _store(
    servers: ServerPool, site: Site, hub: EmbeddedNatsServer | None = None
) -> list[EmbeddedNatsServer]:
    leaf_addrs = [f"127.0.0.1:{hub.leaf_port}"] if hub is not None else []
    started = [await servers.start(c) for c in store_configs(site, "s1", TILLS, leaf_addrs)]
    await wait_full_mesh(started)
    return started


async def test_store_cluster_survives_sigkill_of_one_till(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    s1, s2, s3 = await _store(servers, site)
    c1 = await connect_replica(s1, site, "s1/t1")
    c3 = await connect_replica(s3, site, "s1/t3")
    clients += [c1, c3]
    sink = Collector()
    await c3.subscribe("tm.ev.s1.>", cb=sink.on_msg)
    await probe_until_seen(c1, events_subject("s1/t1"), sink)

    await s2.kill(signal.SIGKILL)
    assert not s2.running
    await c1.publish(events_subject("s1/t1"), b"after-kill")
    await sink.wait_for(events_subject("s1/t1"), b"after-kill")


async def test_hq_and_store_over_leaf(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    hub = await servers.start(hq_config(site))
    s1, _s2, s3 = await _store(servers, site, hub)
    await wait_leafs(hub, 3)
    hq = await connect_replica(hub, site, "hq")
    t1 = await connect_replica(s1, site, "s1/t1")
    t3 = await connect_replica(s3, site, "s1/t3")
    clients += [hq, t1, t3]

    # till -> HQ
    at_hq = Collector()
    await hq.subscribe("tm.ev.>", cb=at_hq.on_msg)
    await probe_until_seen(t1, events_subject("s1/t1"), at_hq)

    # HQ -> till
    at_t3 = Collector()
    await t3.subscribe(events_subject("hq"), cb=at_t3.on_msg)
    await probe_until_seen(hq, events_subject("hq"), at_t3)

    # request/reply across the leaf: HQ pulls from t1's responder.
    async def responder(msg: Msg) -> None:
        await msg.respond(b"range-for-" + msg.data)

    await t1.subscribe(pulls_to("s1/t1"), cb=responder)
    reply = await _request_until_answered(hq, pull_subject("s1/t1", "hq"), b"hq")
    assert reply == b"range-for-hq"


async def _request_until_answered(nc: Client, subject: str, data: bytes) -> bytes:
    """Retry a request while the responder's interest crosses the leaf link."""
    got: list[bytes] = []

    async def answered() -> bool:
        try:
            got.append((await nc.request(subject, data, timeout=0.5)).data)
        except (NoRespondersError, NatsTimeoutError):  # interest not there yet
            return False
        return True

    await wait_until(answered, f"a reply on {subject}")
    return got[0]


async def test_leaf_link_heals_after_hq_sigkill_and_restart(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    hub = await servers.start(hq_config(site, ["s1"]))
    s1, _s2, _s3 = await _store(servers, site, hub)
    await wait_leafs(hub, 3)
    old_pid = hub.pid

    await hub.kill(signal.SIGKILL)
    await hub.start()  # same config, so the same client and leaf ports
    assert hub.pid != old_pid
    # Nobody tells the tills: their leaf remotes must retry on their own.
    # Measured: back within ~1 s with `leafnodes { reconnect: 1 }`.
    healed_in = await wait_leafs(hub, 3, timeout=10)
    assert healed_in < 5

    hq = await connect_replica(hub, site, "hq")
    t1 = await connect_replica(s1, site, "s1/t1")
    clients += [hq, t1]
    at_hq = Collector()
    await hq.subscribe("tm.ev.s1.>", cb=at_hq.on_msg)
    await probe_until_seen(t1, events_subject("s1/t1"), at_hq)


async def test_leaf_fails_over_across_a_three_node_hq(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    ports = [(free_port(), free_port(), free_port()) for _ in range(3)]  # client, leaf, route
    hubs = []
    for i, (port, leaf_port, cport) in enumerate(ports):
        peers = [f"127.0.0.1:{p[2]}" for j, p in enumerate(ports) if j != i]
        cfg = hq_server_config(
            site.public,
            ["s1"],
            site.machine(f"hq-{i + 1}"),
            name=f"hq-{i + 1}",
            port=port,
            leaf_port=leaf_port,
            cluster_port=cport,
            peer_cluster_addrs=peers,
        )
        hubs.append(await servers.start(cfg))
    await wait_full_mesh(hubs)
    (till_cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{p[1]}" for p in ports])
    till = await servers.start(till_cfg)

    async def leaf_count(hub: EmbeddedNatsServer) -> int:
        return int((await hub.monitor("/leafz"))["leafnodes"]) if hub.running else 0

    async def linked() -> bool:
        return sum([await leaf_count(h) for h in hubs]) == 1

    attached: list[EmbeddedNatsServer] = []

    async def found_attached() -> bool:
        counts = [await leaf_count(h) for h in hubs]
        attached[:] = [h for h, n in zip(hubs, counts, strict=True) if n == 1]
        return sum(counts) == 1

    await wait_until(found_attached, "the store's leaf connected to one HQ node")
    victim = attached[0]
    survivor = next(h for h in hubs if h is not victim)
    hq = await connect_replica(survivor, site, "hq")
    t1 = await connect_replica(till, site, "s1/t1")
    clients += [hq, t1]
    at_hq = Collector()
    await hq.subscribe("tm.ev.s1.>", cb=at_hq.on_msg)
    await probe_until_seen(t1, events_subject("s1/t1"), at_hq)

    await victim.kill(signal.SIGKILL)
    await wait_until(linked, "the leaf re-attached to a surviving HQ node")
    await t1.publish(events_subject("s1/t1"), b"after-failover")
    await at_hq.wait_for(events_subject("s1/t1"), b"after-failover")
