"""Who a pull request is served to, over real nats-server processes: the requester its
subject names (permissions let only that replica publish there), and only on that
requester's own reply inbox. A request asking for its reply anywhere else is refused
before anything is read or any budget spent, and recorded against the requester the
subject names, never against the replica whose inbox it named (issue 13, item 5).

HQ runs the shipping `SyncTransport` over a real log. The requests come from raw
clients with tills' own identities on s1/t1's server, across the leaf link, and from
a rogue user of that server (a compromised store server, fenced only by HQ's leaf
permissions). A till's genuine pull, answered, first proves HQ's interest has crossed
the leaf; each refused request is then followed by a genuine one on the same
connection: NATS keeps one publisher's order and the transport handles one
subscription's messages in order, so once the genuine one is answered, the refused
ones were handled, and the incidents counted are exactly the requests sent.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import NkeyUserSpec
from broker.identity import Nkey
from broker.server import EmbeddedNatsServer
from broker.subjects import inbox_prefix, pull_subject
from conflict.state import StoreState
from core.events import StockReceived
from core.log import EventLog
from replicas.sync.config import FORGED_REPLY, SyncConfig
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import EventsFrame, PullRequest, decode_message, encode_message
from replicas.sync.transport import SyncTransport
from tests.broker.kit import (
    Collector,
    Site,
    connect_replica,
    connect_seed,
    hq_config,
    store_configs,
    wait_leafs,
    wait_until,
)

BURST = 5
# A budget of one warm-up event and BURST more per requester that (practically) never
# refills: a request served by mistake would leave its requester's next pull short.
CONFIG = SyncConfig(serve_rate=1e-6, serve_burst=BURST + 1, announce_interval=60, pull_timeout=2)


@dataclass
class Served:
    """HQ's sync over the hub, and s1/t1's server on a leaf link to it."""

    engine: SyncEngine
    till: EmbeddedNatsServer
    site: Site
    rogue_key: Nkey
    clients: list[Client] = field(default_factory=list)

    async def client(self, rid: str) -> Client:
        """A till's client on s1/t1's server, with its own identity and inbox."""
        nc = await connect_replica(self.till, self.site, rid)
        self.clients.append(nc)
        return nc

    async def rogue(self) -> Client:
        """A user of the store server without permissions, reading t1's inbox."""
        nc = await connect_seed(self.till, self.site.seed_file("rogue", self.rogue_key), "s1/t1")
        self.clients.append(nc)
        return nc

    def incidents(self) -> dict[tuple[str, str], int]:
        status = self.engine.status(time.monotonic())
        return {(i.peer, i.kind): i.count for i in status.incidents}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    site = Site(tmp_path / "site")
    hub_cfg = hq_config(site, ["s1"])
    (till_cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub_cfg.leaf_port}"])
    rogue = Nkey.generate()
    till_cfg = replace(till_cfg, users=(*till_cfg.users, NkeyUserSpec(rogue.public_key)))
    async with contextlib.AsyncExitStack() as stack:
        hub = await stack.enter_async_context(EmbeddedNatsServer(hub_cfg, tmp_path))
        till = await stack.enter_async_context(EmbeddedNatsServer(till_cfg, tmp_path))
        await wait_leafs(hub, 1)
        log = await EventLog.open(tmp_path / "hq.db", "hq", StoreState())
        stack.push_async_callback(log.close)
        await log.append_many([StockReceived(sku="SKU-1", qty=i + 1) for i in range(2 * BURST)])
        nc = await connect_replica(hub, site, "hq")
        stack.push_async_callback(nc.close)
        engine = SyncEngine("hq", config=CONFIG, vv=log.version_vector())
        transport = SyncTransport(nc, log, engine, tick_interval=60)
        await transport.start()
        stack.push_async_callback(transport.close)
        served = Served(engine, till, site, rogue)
        yield served
        for client in served.clients:
            await client.close()


def pull_request(requester: str, events: int = BURST) -> bytes:
    """`requester` asks HQ for its first `events` events."""
    ranges = [("hq", 1, events)]
    return encode_message(PullRequest(requester, 1, ranges, events, CONFIG.max_frame_bytes))


async def pull(nc: Client, requester: str, events: int = BURST) -> EventsFrame:
    """A genuine pull, on `requester`'s own subject and inbox: HQ's answer. Retried
    while nobody answers: HQ's interest crosses the leaf asynchronously (an unanswered
    pull reached no responder, so it spent nothing)."""
    replies: list[Msg] = []

    async def answered() -> bool:
        subject, payload = pull_subject("hq", requester), pull_request(requester, events)
        try:
            replies.append(await nc.request(subject, payload, timeout=1))
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return True

    await wait_until(answered, f"HQ to answer {requester}'s pull")
    assert replies[0].subject.startswith(inbox_prefix(requester) + ".")
    frame = decode_message(replies[0].data, "hq")
    assert isinstance(frame, EventsFrame)
    return frame


async def test_a_pull_asking_its_reply_on_another_inbox_is_refused_unread(
    served: Served,
) -> None:
    t1, t2 = await served.client("s1/t1"), await served.client("s1/t2")
    at_t2 = Collector()
    await t2.subscribe("_INBOX.s1.t2.forged", cb=at_t2.on_msg)  # t2 reads its own inbox
    await pull(t1, "s1/t1", events=1)  # HQ's interest is in
    forged = pull_subject("hq", "s1/t1")  # t1 may publish this: it is t1's own
    for _ in range(8):  # the 16 garbage requests, and valid ones
        await t1.publish(forged, os.urandom(64), reply="_INBOX.s2.t1.x")
        await t1.publish(forged, pull_request("s1/t1"), reply="_INBOX.s1.t2.forged")

    # Served in full: the refused requests spent nothing of t1's budget.
    assert len((await pull(t1, "s1/t1")).events) == BURST
    await t2.flush()
    assert at_t2.msgs == []  # nothing was ever sent to t2's inbox for t1

    incidents = served.incidents()
    # Refused before it was decoded (no bad_frame); t2 and s2/t1 blamed for nothing.
    assert incidents == {("s1/t1", FORGED_REPLY): 16}
    peers = served.engine.status(time.monotonic()).peers
    assert peers["s1/t1"].backoff > 0  # the throttled one is who sent them
    assert "s1/t2" not in peers and "s2/t1" not in peers


async def test_a_store_server_speaks_at_hq_for_its_own_till_alone(served: Served) -> None:
    """A compromised store server (a user of it without permissions) reaches HQ only
    through its till's leaf, which carries that till's pulls alone: no pull in another
    till's or store's name, nor one naming no valid requester, gets to HQ at all."""
    bad = await served.rogue()
    await pull(bad, "s1/t1", events=1)  # HQ's interest is in; the leaf works, as t1
    for subject, requester in (
        ("tm.pull.hq.s1.t$2", "s1/t2"),  # names no till
        (pull_subject("hq", "s1/t2"), "s1/t2"),  # another till of the store
        (pull_subject("hq", "s2/x"), "s2/x"),  # another store
    ):
        await bad.publish(subject, pull_request(requester), reply="_INBOX.s1.t1.x")
    assert len((await pull(bad, "s1/t1")).events) == BURST  # and after them, as before
    assert served.incidents() == {}  # none of them reached HQ
    peers = served.engine.status(time.monotonic()).peers
    assert set(peers) == {"s1/t1"}  # no peer made up from what a stranger wrote
