"""Permissions are enforced by the server, on client and on leaf connections.

Negative checks need no sleeps: each forbidden publish is followed by an allowed
one on the same connection and path, and NATS keeps per-publisher order, so once
the allowed message has arrived the forbidden one would already have arrived.
"""

from __future__ import annotations

from dataclasses import replace

import nats
from nats.aio.client import Client

from broker.config import UserSpec
from broker.credentials import Credentials
from broker.subjects import ALL_EVENTS, ALL_VV, events_subject
from tests.broker.kit import (
    Collector,
    ServerPool,
    connect_replica,
    hq_config,
    probe_until_seen,
    store_configs,
    wait_leafs,
    wait_until,
)


async def test_till_cannot_publish_as_another_till(
    servers: ServerPool, creds: dict[str, Credentials], clients: list[Client]
) -> None:
    (cfg,) = store_configs("s1", ["t1"], creds)
    srv = await servers.start(cfg)
    errors: list[Exception] = []
    t1 = await connect_replica(srv, creds["s1/t1"], "s1/t1", errors)
    t2 = await connect_replica(srv, creds["s1/t2"], "s1/t2")  # same server is enough
    clients += [t1, t2]
    sink = Collector()
    await t2.subscribe("tm.ev.s1.>", cb=sink.on_msg)
    # Not t2.flush(): observed to return before the server had processed t2's SUB
    # (a PONG answering an earlier PING?), so prove the interest with a probe.
    await probe_until_seen(t1, events_subject("s1/t1"), sink)

    await t1.publish(events_subject("s1/t2"), b"forged")
    await t1.publish(events_subject("s1/t1"), b"genuine")
    await sink.wait_for(events_subject("s1/t1"), b"genuine")
    assert sink.count(events_subject("s1/t2")) == 0

    async def reported() -> bool:
        return any("permissions violation" in str(e) for e in errors)

    # nats-py hands the server's -ERR to error_cb as nats.errors.Error:
    # 'nats: permissions violation for publish to "tm.ev.s1.t2"'; the connection stays up.
    await wait_until(reported, "permissions violation reported to error_cb")
    assert any('"tm.ev.s1.t2"' in str(e) for e in errors)
    assert t1.is_connected


async def test_till_cannot_subscribe_to_other_stores(
    servers: ServerPool, creds: dict[str, Credentials], clients: list[Client]
) -> None:
    (cfg,) = store_configs("s1", ["t1"], creds)
    srv = await servers.start(cfg)
    errors: list[Exception] = []
    t1 = await connect_replica(srv, creds["s1/t1"], "s1/t1", errors)
    clients.append(t1)
    await t1.subscribe("tm.ev.s2.>")

    async def reported() -> bool:
        return any("subscription" in str(e) and "tm.ev.s2.>" in str(e) for e in errors)

    await wait_until(reported, "subscribe violation reported to error_cb")


async def test_store_leaf_cannot_inject_other_store_subjects_into_hq(
    servers: ServerPool, creds: dict[str, Credentials], clients: list[Client]
) -> None:
    hub = await servers.start(hq_config(creds, ["s1", "s2"]))
    (cfg,) = store_configs("s1", ["t1"], creds, [f"127.0.0.1:{hub.leaf_port}"])
    # A compromised store server: a local user with no permissions at all. Only
    # HQ's leaf permissions stand between it and the other stores' subjects.
    rogue = Credentials("rogue", "rogue-password")
    till = await servers.start(replace(cfg, users=(*cfg.users, UserSpec(rogue))))
    await wait_leafs(hub, 1)
    hq = await connect_replica(hub, creds["hq"], "hq")
    bad = await nats.connect(till.client_url, user=rogue.user, password=rogue.password)
    clients += [hq, bad]
    at_hq = Collector()
    for subject in (ALL_EVENTS, ALL_VV):
        await hq.subscribe(subject, cb=at_hq.on_msg)
    await probe_until_seen(bad, events_subject("s1/t1"), at_hq)

    await bad.publish(events_subject("s2/x"), b"injected")
    await bad.publish("tm.vv.s2.x", b"injected")
    await bad.publish(events_subject("hq"), b"injected")
    await bad.publish(events_subject("s1/t1"), b"allowed")
    await at_hq.wait_for(events_subject("s1/t1"), b"allowed")
    assert [m for m in at_hq.msgs if m[1] == b"injected"] == []
