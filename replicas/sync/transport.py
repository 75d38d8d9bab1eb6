"""The NATS side of sync: `NatsWire` (the driver's `Wire` over nats-py) and
`SyncTransport`, which runs one replica's `SyncDriver` over a connected client.

All decisions are the engine's and all glue is the driver's. This module only
- subscribes to the subjects the replica's permissions allow (its store's and
  HQ's events and vectors, or every store's for HQ, plus the pulls addressed to it);
- names the peer of every message from what NATS fences, never from the payload
  nor the reply subject: the publishing subject, which for a pull request names
  the requester (only the requester may publish it);
- refuses, before anything is read or any budget spent, a pull request whose
  reply inbox is not its requester's own (the reply would go to another replica)
  or whose subject names no valid requester;
- publishes the engine's actions in order from one sender task, sends pull
  requests and hands their answers back to the driver, and ticks it every
  `tick_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from broker.subjects import (
    ALL_EVENTS,
    ALL_VV,
    HQ,
    events_subject,
    is_inbox_of,
    is_pull_subject,
    parse_replica_id,
    peer_from_subject,
    pull_parties,
    pulls_to,
    store_events_wildcard,
    store_vv_wildcard,
    vv_subject,
)
from core.errors import TillmeshError
from core.log import EventLog
from replicas.sync.driver import SyncDriver, SyncObserver
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import Action, Publish, Request

__all__ = ["NatsWire", "SyncTransport", "subscriptions_for"]

log = logging.getLogger(__name__)


def subscriptions_for(replica_id: str) -> list[str]:
    """What a replica listens to: exactly what `permissions_for` lets it subscribe to,
    but its reply inbox (nats-py subscribes that itself)."""
    rid = parse_replica_id(replica_id)
    if rid.is_hq:
        return [ALL_EVENTS, ALL_VV, pulls_to(HQ)]
    assert rid.store is not None
    return [
        store_events_wildcard(rid.store),
        events_subject(HQ),
        store_vv_wildcard(rid.store),
        vv_subject(HQ),
        pulls_to(replica_id),
    ]


class NatsWire:
    """The driver's `Wire` over nats-py: one sender task keeps publishes in the order
    the engine made them; each pull request runs as its own task. `bind` the driver
    before `start`."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.driver: SyncDriver | None = None
        self._outbox: asyncio.Queue[Action | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None

    def send(self, actions: Sequence[Action]) -> None:
        for action in actions:
            self._outbox.put_nowait(action)

    def start(self) -> None:
        self._sender = asyncio.create_task(self._send_loop(), name="sync-sender")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._sender is not None:
            await self._outbox.put(None)
            await self._sender
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _send_loop(self) -> None:
        while (action := await self._outbox.get()) is not None:
            try:
                if isinstance(action, Publish):
                    await self.nc.publish(action.subject, action.payload)
                else:
                    self._spawn(self._pull(action))
            except NatsError as e:  # disconnected: the periodic announce/pull recovers
                log.debug("sync publish failed: %s", e)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pull(self, req: Request) -> None:
        assert self.driver is not None, "NatsWire.driver is bound before start"
        try:
            reply = await self.nc.request(req.subject, req.payload, timeout=req.timeout)
        except (NatsError, TimeoutError) as e:
            self.driver.on_pull_failed(req.peer, req.pull_id, str(e))
            return
        try:
            await self.driver.on_reply(req.peer, req.pull_id, reply.data)
        except TillmeshError as e:  # e.g. the log closed under us; the next tick retries
            log.warning("sync: %s on the reply from %s", e, req.peer)


class SyncTransport:
    """Runs one replica's sync over a connected nats-py client. `await start()`, `close()`."""

    def __init__(
        self,
        nc: Client,
        log: EventLog,
        engine: SyncEngine,
        *,
        tick_interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        observer: SyncObserver | None = None,
    ) -> None:
        self.nc, self.log, self.engine = nc, log, engine
        self.tick_interval = tick_interval
        self.wire = NatsWire(nc)
        self.driver = SyncDriver(engine, log, self.wire, clock=clock, observer=observer)
        self.wire.driver = self.driver
        self._subs: list[Subscription] = []
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Listen first, then announce: a peer's prompt answer to the announcement must
        # find us subscribed (else the first pulls wait for the next period).
        self.wire.start()
        for subject in subscriptions_for(self.engine.replica_id):
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_msg))
        self.log.listeners.append(self.driver.on_durable)
        self.driver.start()
        self._ticker = asyncio.create_task(self._tick_loop(), name="sync-ticker")

    async def on_reconnected(self) -> None:
        """Pass as nats-py's `reconnected_cb`: announce at once after a partition."""
        self.driver.connected()

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.log.listeners.remove(self.driver.on_durable)
        for sub in self._subs:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        self._subs.clear()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        await self.wire.close()

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self.driver.tick()

    async def _on_msg(self, msg: Msg) -> None:
        try:
            await self._dispatch(msg)
        except TillmeshError as e:  # e.g. the log closed under us; the next tick retries
            log.warning("sync: %s on %s", e, msg.subject)

    async def _dispatch(self, msg: Msg) -> None:
        if is_pull_subject(msg.subject):
            await self._serve(msg)
            return
        peer = peer_from_subject(msg.subject)
        if peer is not None and peer != self.engine.replica_id:
            await self.driver.on_publish(peer, msg.data)

    async def _serve(self, msg: Msg) -> None:
        """Answer a pull request of the requester its subject names. Its reply subject is
        the publisher's free choice, so it is answered only on the requester's own
        inbox: anywhere else the reply would go to a replica that never asked."""
        parties = pull_parties(msg.subject)
        if parties is None or parties[0] != self.engine.replica_id:
            self.driver.stray_request(msg.subject)
            return
        requester = parties[1]
        if not is_inbox_of(requester, msg.reply):
            self.driver.forged_reply(requester, msg.reply)
            return
        reply = await self.driver.on_request(requester, msg.data)
        if reply is not None:
            await msg.respond(reply)
