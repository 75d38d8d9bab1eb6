"""The permission sets of each replica and each store's leaf, and the server
enforcing them on client and on leaf connections.

Negative checks need no sleeps: each forbidden publish is followed by an allowed
one on the same connection and path, and NATS keeps per-publisher order, so once
the allowed message has arrived the forbidden one would already have arrived.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import NkeyUserSpec
from broker.errors import InvalidReplicaId
from broker.identity import Nkey
from broker.permissions import leaf_permissions, permissions_for
from broker.server import EmbeddedNatsServer
from broker.subjects import pull_subject, pulls_to
from tests.broker.kit import (
    Collector,
    ServerPool,
    Site,
    connect_replica,
    connect_seed,
    hq_config,
    probe_until_seen,
    store_configs,
    wait_leafs,
    wait_until,
)


def test_till_permissions() -> None:
    p = permissions_for("s1/t1", "s1")
    assert p["publish"]["allow"] == [
        "tm.ev.s1.t1",
        "tm.vv.s1.t1",
        "tm.pull.s1.*.s1.t1",  # pulls from its store's tills, as itself
        "tm.pull.hq.s1.t1",  # pulls from HQ, as itself
    ]
    assert set(p["subscribe"]["allow"]) == {
        "tm.ev.s1.>",
        "tm.ev.hq",
        "tm.vv.s1.>",
        "tm.vv.hq",
        "tm.pull.s1.t1.>",  # pulls addressed to it, by anyone
        "_INBOX.s1.t1.>",
    }
    assert p["allow_responses"] is True
    json.dumps(p)  # plain data, renderable


def test_hq_permissions() -> None:
    p = permissions_for("hq")
    assert p["publish"]["allow"] == ["tm.ev.hq", "tm.vv.hq", "tm.pull.*.*.hq"]
    assert p["subscribe"]["allow"] == ["tm.ev.>", "tm.vv.>", "tm.pull.hq.>", "_INBOX.hq.>"]


def test_store_mismatch_is_refused() -> None:
    with pytest.raises(InvalidReplicaId):
        permissions_for("s1/t1", "s2")


def test_a_tills_leaf_speaks_for_that_till_alone() -> None:
    p = leaf_permissions("s1/t1")
    assert p["publish"]["allow"] == [
        "tm.ev.s1.t1",
        "tm.vv.s1.t1",
        "tm.pull.hq.s1.t1",
        "_INBOX.hq.>",
    ]
    assert p["subscribe"]["allow"] == ["tm.ev.hq", "tm.vv.hq", "tm.pull.s1.t1.hq", "_INBOX.s1.t1.>"]
    with pytest.raises(InvalidReplicaId):
        leaf_permissions("hq")


# --- enforced by the server ----------------------------------------------------------------
# Publishing as another till, and a store server injecting another store's subjects
# into HQ, are refused in test_broker_identity_live.py.


async def test_till_cannot_subscribe_to_other_stores(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    (cfg,) = store_configs(site, "s1", ["t1"])
    srv = await servers.start(cfg)
    errors: list[Exception] = []
    t1 = await connect_replica(srv, site, "s1/t1", errors)
    clients.append(t1)
    await t1.subscribe("tm.ev.s2.>")

    async def reported() -> bool:
        return any("subscription" in str(e) and "tm.ev.s2.>" in str(e) for e in errors)

    await wait_until(reported, "subscribe violation reported to error_cb")


# --- pull requests name their requester, and only the requester may send them --------------


@dataclass
class Linked:
    """HQ's hub (stores s1, s2) and s1/t1's server on a leaf link to it. The till's
    server also has a rogue user without permissions: a compromised store server,
    fenced only by HQ's leaf permissions for s1."""

    site: Site
    hub: EmbeddedNatsServer
    till: EmbeddedNatsServer
    rogue_key: Nkey

    async def connect(self, srv: EmbeddedNatsServer, rid: str, errors: list[Exception]) -> Client:
        """A replica's client with its own identity."""
        return await connect_replica(srv, self.site, rid, errors)

    async def rogue(self) -> Client:
        return await connect_seed(self.till, self.site.seed_file("rogue", self.rogue_key), "s1/t1")


@pytest.fixture
async def linked(servers: ServerPool, site: Site) -> Linked:
    hub = await servers.start(hq_config(site))
    (cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.leaf_port}"])
    key = Nkey.generate()
    till = await servers.start(replace(cfg, users=(*cfg.users, NkeyUserSpec(key.public_key))))
    await wait_leafs(hub, 1)
    return Linked(site, hub, till, key)


async def _pulls_at_hq(link: Linked, clients: list[Client]) -> Collector:
    """What HQ's client receives of the pulls addressed to it."""
    hq = await link.connect(link.hub, "hq", [])
    clients.append(hq)
    at_hq = Collector()
    await hq.subscribe(pulls_to("hq"), cb=at_hq.on_msg)
    return at_hq


def _violations(errors: list[Exception], subjects: Sequence[str]) -> Callable[[], Awaitable[bool]]:
    async def reported() -> bool:
        text = " ".join(str(e) for e in errors)
        return all(f'permissions violation for publish to "{s}"' in text for s in subjects)

    return reported


async def test_a_till_sends_pulls_only_in_its_own_name(
    linked: Linked, clients: list[Client]
) -> None:
    at_hq = await _pulls_at_hq(linked, clients)
    errors: list[Exception] = []
    t1 = await linked.connect(linked.till, "s1/t1", errors)
    clients.append(t1)
    own = pull_subject("hq", "s1/t1")
    await probe_until_seen(t1, own, at_hq)

    forged = [
        pull_subject("hq", "s1/t2"),  # a till of its own store
        pull_subject("hq", "s2/x"),  # another store's till
        pull_subject("s2/x", "s1/t1"),  # as itself, but to another store's till
    ]
    for subject in forged:
        await t1.publish(subject, b"forged", reply="_INBOX.s1.t1.x")
    await t1.publish(own, b"genuine", reply="_INBOX.s1.t1.y")
    await at_hq.wait_for(own, b"genuine")
    assert [m for m in at_hq.msgs if m[1] == b"forged"] == []  # HQ never saw one
    await wait_until(_violations(errors, forged), "a permissions violation for each forgery")
    assert t1.is_connected


async def test_a_till_receives_only_the_pulls_addressed_to_it(
    linked: Linked, clients: list[Client]
) -> None:
    errors: list[Exception] = []
    t1 = await linked.connect(linked.till, "s1/t1", errors)
    clients.append(t1)
    for subject in (pulls_to("s1/t2"), pulls_to("hq")):
        await t1.subscribe(subject)

    async def refused() -> bool:
        text = " ".join(str(e) for e in errors)
        return all(f'"{s}"' in text for s in (pulls_to("s1/t2"), pulls_to("hq")))

    await wait_until(refused, "a subscription violation for each")


async def test_a_store_leaf_carries_no_pull_in_another_stores_name(
    linked: Linked, clients: list[Client]
) -> None:
    at_hq = await _pulls_at_hq(linked, clients)
    bad = await linked.rogue()
    clients.append(bad)
    # A compromised store server may speak for its own tills, no one else.
    own = pull_subject("hq", "s1/t1")
    await probe_until_seen(bad, own, at_hq)

    for requester in ("s2/x", "hq"):
        await bad.publish(pull_subject("hq", requester), b"injected", reply="_INBOX.s1.t1.x")
    await bad.publish(own, b"allowed")
    await at_hq.wait_for(own, b"allowed")
    assert [m for m in at_hq.msgs if m[1] == b"injected"] == []


async def test_the_server_does_not_fence_reply_subjects(
    linked: Linked, clients: list[Client]
) -> None:
    """Why the responder checks the reply inbox (broker.permissions): a till's pull in
    its own name, asking for the reply on another store's inbox, reaches HQ."""
    hq = await linked.connect(linked.hub, "hq", [])
    t1 = await linked.connect(linked.till, "s1/t1", [])
    clients += [hq, t1]
    replies: list[str] = []

    async def record(msg: Msg) -> None:
        replies.append(msg.reply)

    await hq.subscribe(pulls_to("hq"), cb=record)
    own = pull_subject("hq", "s1/t1")

    async def arrived() -> bool:
        await t1.publish(own, b"forged reply", reply="_INBOX.s2.x.y")
        await t1.flush()
        return "_INBOX.s2.x.y" in replies

    await wait_until(arrived, "the pull with a forged reply subject at HQ")
