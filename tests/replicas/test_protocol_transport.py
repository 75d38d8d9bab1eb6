"""The NATS adapter end to end: real nats-server processes (a store server with a leaf
link to HQ), real SQLite logs, broker permissions enforced.

Proves that the subjects, permissions, subject-derived peer names and the adapter's
log calls fit together: a late-joining till catches up by pulling, live pushes
flow both ways across the leaf link, and HQ's vector shows up as a receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from nats.aio.client import Client

from broker.permissions import permissions_for
from broker.server import EmbeddedNatsServer
from broker.subjects import inbox_prefix, is_inbox_of, peer_from_subject, pull_parties
from core.events import StockReceived
from core.fold import Accepted
from core.log import EventLog
from replicas.sync.config import SyncConfig
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import Publish, Request, holds
from replicas.sync.transport import SyncTransport, subscriptions_for
from tests.broker.kit import Site, connect_replica, hq_config, store_configs

CONFIG = SyncConfig(announce_interval=0.5, announce_min_gap=0.05, pull_window=20, pull_timeout=2)


class NoFold:
    version = 1
    tables: tuple[str, ...] = ()

    def create_tables(self, conn: sqlite3.Connection) -> None: ...

    def drop_tables(self, conn: sqlite3.Connection) -> None: ...

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Accepted]) -> None: ...

    def settle(self, conn: sqlite3.Connection) -> bool:
        return False


def test_peer_names_come_from_fenced_subjects() -> None:
    assert peer_from_subject("tm.ev.s1.t2") == "s1/t2"
    assert peer_from_subject("tm.vv.hq") == "hq"
    assert peer_from_subject("tm.vv.s1") is None
    assert peer_from_subject("tm.ev.hq.x") is None
    assert pull_parties("tm.pull.hq.s1.t2") == ("hq", "s1/t2")
    assert pull_parties("tm.pull.s1.t2.hq") == ("s1/t2", "hq")
    # The reply subject names nobody: it is only checked against the requester's inbox.
    assert is_inbox_of("s1/t2", "_INBOX.s1.t2.abc.def")
    assert not is_inbox_of("s1/t2", "_INBOX.s2.t1.abc")


@pytest.mark.parametrize("replica", ["hq", "s1/t1", "s2/x"])
def test_a_replica_subscribes_to_exactly_what_it_may(replica: str) -> None:
    # nats-py subscribes the reply inbox itself; the transport subscribes the rest.
    allowed = permissions_for(replica)["subscribe"]["allow"]
    assert sorted([*subscriptions_for(replica), f"{inbox_prefix(replica)}.>"]) == sorted(allowed)


async def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


class Replica:
    def __init__(self, rid: str, log: EventLog, nc: Client) -> None:
        self.rid, self.log, self.nc = rid, log, nc
        self.engine = SyncEngine(rid, config=CONFIG, vv=log.version_vector())
        self.transport = SyncTransport(nc, log, self.engine, tick_interval=0.1)

    async def add(self, n: int) -> None:
        await self.log.append_many([StockReceived(sku="SKU-1", qty=i + 1) for i in range(n)])


@pytest.fixture
async def network(tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Replica]]]:
    site = Site(tmp_path / "site")
    hub = EmbeddedNatsServer(hq_config(site, ["s1"]), tmp_path)
    (till,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.config.leaf_port}"])
    store = EmbeddedNatsServer(till, tmp_path)
    replicas: list[Replica] = []
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(hub)
        await stack.enter_async_context(store)
        await wait_for_leaf(hub)

        async def start(rid: str) -> Replica:
            srv = hub if rid == "hq" else store
            replica = await open_replica(rid, srv, site, tmp_path)
            replicas.append(replica)
            await replica.transport.start()
            return replica

        try:
            yield start
        finally:
            for r in replicas:
                await r.transport.close()
                await r.nc.close()
                await r.log.close()


async def wait_for_leaf(hub: EmbeddedNatsServer) -> None:
    for _ in range(200):
        with contextlib.suppress(OSError):
            if int((await hub.monitor("/leafz"))["leafnodes"]) == 1:
                return
        await asyncio.sleep(0.05)
    raise AssertionError("leaf link did not come up")


async def open_replica(rid: str, srv: EmbeddedNatsServer, site: Site, tmp: Path) -> Replica:
    path = tmp / f"{rid.replace('/', '-')}.db"
    log = await EventLog.open(path, rid, NoFold(), in_scope=holds(rid))
    return Replica(rid, log, await connect_replica(srv, site, rid))


async def test_tills_and_hq_converge_over_nats(
    network: Callable[[str], Awaitable[Replica]],
) -> None:
    t1 = await network("s1/t1")
    await t1.add(95)  # before anyone listens: only pulls can bring these
    hq = await network("hq")
    t2 = await network("s1/t2")
    await hq.add(3)
    await t2.add(7)
    await t1.add(5)  # live push
    want = {"s1/t1": 100, "s1/t2": 7, "hq": 3}
    for r in (t1, t2, hq):
        await wait_for(lambda r=r: r.log.version_vector() == want, f"{r.rid} to converge")
    # Receipts come with each peer's next announcement, a moment after it converged.
    both = ["hq", "s1/t2"]
    await wait_for(lambda: t1.engine.holders("s1/t1", 100) == both, "t2's and HQ's receipts")
    assert t1.engine.receipts() == {"s1/t2": 100, "hq": 100}
    status = t2.engine.status(0.0)
    assert not [i for i in status.incidents if i.kind not in ("timeout", "duplicate_frame")]
    assert dataclasses.asdict(status)["lag"] == {}


async def test_nats_errors_on_a_closed_link_stay_inside_the_wire(tmp_path: Path) -> None:
    """A publish and a pull over a closed nats-py client: the sender task lives on and
    the pull is reported failed to the engine (no raw NATS error escapes), so the next
    tick retries once the link is back."""
    site = Site(tmp_path / "site")
    hub = EmbeddedNatsServer(hq_config(site, ["s1"]), tmp_path)
    async with hub:
        nc = await connect_replica(hub, site, "hq")
        log = await EventLog.open(tmp_path / "hq.db", "hq", NoFold())
        transport = SyncTransport(nc, log, SyncEngine("hq", config=CONFIG), tick_interval=60)
        failed: list[tuple[str, int]] = []
        transport.driver.on_pull_failed = lambda peer, pull_id, detail: failed.append(  # type: ignore[method-assign]
            (peer, pull_id)
        )
        await transport.start()
        await nc.close()
        try:
            transport.wire.send(
                [Publish("tm.vv.hq", b"x"), Request("tm.pull.s1.t1.hq", b"x", 0.5, "s1/t1", 7)]
            )
            await wait_for(lambda: bool(failed), "the pull to be reported failed", 5)
            assert failed == [("s1/t1", 7)]
            sender = transport.wire._sender
            assert sender is not None and not sender.done()
        finally:
            await transport.close()
            await log.close()
