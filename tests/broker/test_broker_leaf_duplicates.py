"""How many copies reach HQ when every till server of a store has its own leaf?

Measured with nats-server 2.15.1: exactly ONE copy per message in both
directions. The hub (and the store cluster) treat the three leaf connections of
one cluster as one path: a till's publish leaves through its own server's leaf
only, and an HQ publish enters the store once and then fans out over routes.
A till's event also reaches another till of the store exactly once (over the
route), never echoed back down by HQ through a second leaf; that held even in a
trial where the leaf user was allowed to subscribe to its own store's subjects.
Replication dedupes by (origin, seq) anyway; this test pins the broker's
behaviour so an upgrade that changes it is noticed.

Absence of extra copies can only be observed over a window, so this test (alone)
waits a fixed grace period after all expected copies arrived.
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client

from broker.subjects import events_subject
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

N = 50
GRACE = 0.5  # seconds to keep listening for late duplicates


async def test_one_copy_per_message_over_three_leafs(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    hub = await servers.start(hq_config(site, ["s1"]))
    leaf = [f"127.0.0.1:{hub.leaf_port}"]
    tills = [await servers.start(c) for c in store_configs(site, "s1", ["t1", "t2", "t3"], leaf)]
    await wait_full_mesh(tills)
    await wait_leafs(hub, 3)
    hq = await connect_replica(hub, site, "hq")
    rids = ["s1/t1", "s1/t2", "s1/t3"]
    conns = [await connect_replica(s, site, r) for s, r in zip(tills, rids, strict=True)]
    clients += [hq, *conns]
    at_hq, at_t3 = Collector(), Collector()
    await hq.subscribe("tm.ev.s1.>", cb=at_hq.on_msg)
    await conns[2].subscribe(events_subject("hq"), cb=at_t3.on_msg)
    await conns[2].subscribe(events_subject("s1/t1"), cb=at_t3.on_msg)
    # Interest must be in place on every path before counting, or we'd
    # undercount: probe from every till and from HQ.
    for nc, rid in zip(conns, rids, strict=True):
        await probe_until_seen(nc, events_subject(rid), at_hq)
    await probe_until_seen(hq, events_subject("hq"), at_t3)
    await probe_until_seen(conns[0], events_subject("s1/t1"), at_t3)

    subject = events_subject("s1/t1")
    for n in range(N):
        await conns[0].publish(subject, b"m%d" % n)
        await hq.publish(events_subject("hq"), b"h%d" % n)
    await conns[0].flush()
    await hq.flush()

    def counts() -> tuple[int, int, int]:
        up = sum(1 for s, d in at_hq.msgs if s == subject and d.startswith(b"m"))
        down = sum(1 for _, d in at_t3.msgs if d.startswith(b"h"))
        peer = sum(1 for s, d in at_t3.msgs if s == subject and d.startswith(b"m"))
        return up, down, peer

    async def all_arrived() -> bool:
        return min(counts()) >= N

    await wait_until(all_arrived, f"{N} messages on every path")
    await asyncio.sleep(GRACE)  # measurement window for late duplicates, not sync
    # (till->HQ, HQ->till, till->till in the store): one copy each, no echo via HQ.
    assert counts() == (N, N, N)
