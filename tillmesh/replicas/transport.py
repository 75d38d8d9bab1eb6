"""The thin NATS adapter around a `SyncEngine`: subjects in, log calls, actions out.

All decisions are the engine's. This module only
- subscribes to the subjects the replica's permissions allow (its store's and
  HQ's events and vectors, or everything for HQ, plus its own pull subject);
- names the peer of every message from what NATS fences (the publishing subject,
  or the reply inbox of a pull request), never from the payload;
- runs the log work the engine asks for (`ingest`, `read_range`) and feeds the
  results back with a monotonic `now`;
- executes the engine's actions in order, and ticks it every `tick_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from tillmesh.broker.errors import InvalidReplicaId
from tillmesh.broker.subjects import (
    ALL_EVENTS,
    ALL_VV,
    HQ,
    events_subject,
    parse_replica_id,
    pull_subject,
    store_events_wildcard,
    store_vv_wildcard,
    vv_subject,
)
from tillmesh.core.errors import TillmeshError
from tillmesh.core.events import Event, encode_event
from tillmesh.core.log import EventLog
from tillmesh.replicas.protocol import (
    Action,
    EventsFrame,
    IngestOutcome,
    Publish,
    PullRequest,
    Request,
    VersionVectorMsg,
)
from tillmesh.replicas.sync import SyncEngine

__all__ = ["SyncTransport", "peer_from_inbox", "peer_from_subject", "subscriptions_for"]

log = logging.getLogger(__name__)


def subscriptions_for(replica_id: str) -> list[str]:
    """What a replica listens to; exactly what `permissions_for` lets it subscribe to."""
    rid = parse_replica_id(replica_id)
    if rid.is_hq:
        return [ALL_EVENTS, ALL_VV, pull_subject(HQ)]
    assert rid.store is not None
    return [
        store_events_wildcard(rid.store),
        events_subject(HQ),
        store_vv_wildcard(rid.store),
        vv_subject(HQ),
        pull_subject(replica_id),
    ]


def _peer_from_tokens(tokens: list[str]) -> str | None:
    candidate = tokens[0] if tokens[:1] == [HQ] else "/".join(tokens[:2])
    try:
        parse_replica_id(candidate)
    except InvalidReplicaId:
        return None
    return candidate


def peer_from_subject(subject: str) -> str | None:
    """`tm.ev.s1.t2` -> `s1/t2`, `tm.vv.hq` -> `hq`; None if it names no replica."""
    tokens = subject.split(".")[2:]
    exact = len(tokens) == (1 if tokens[:1] == [HQ] else 2)
    return _peer_from_tokens(tokens) if exact else None


def peer_from_inbox(reply: str) -> str | None:
    """`_INBOX.s1.t2.<id>` -> `s1/t2`: who may read this reply (inboxes are fenced)."""
    tokens = reply.split(".")
    return _peer_from_tokens(tokens[1:]) if tokens[0] == "_INBOX" and len(tokens) > 2 else None


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
    ) -> None:
        self.nc, self.log, self.engine = nc, log, engine
        self.tick_interval = tick_interval
        self.clock = clock
        self._outbox: asyncio.Queue[Action | None] = asyncio.Queue()
        self._subs: list[Subscription] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._sender: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        now = self.clock()
        self._enqueue(self.engine.on_local_vv(self.log.version_vector(), now))
        for subject in subscriptions_for(self.engine.replica_id):
            self._subs.append(await self.nc.subscribe(subject, cb=self._on_msg))
        self.log.listeners.append(self._on_durable)
        self._sender = asyncio.create_task(self._send_loop(), name="sync-sender")
        self._ticker = asyncio.create_task(self._tick_loop(), name="sync-ticker")
        self._enqueue(self.engine.on_connected(now))

    async def on_reconnected(self) -> None:
        """Pass as nats-py's `reconnected_cb`: announce at once after a partition."""
        self._enqueue(self.engine.on_connected(self.clock()))

    async def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.log.listeners.remove(self._on_durable)
        for sub in self._subs:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()
        self._subs.clear()
        if self._ticker is not None:
            self._ticker.cancel()
        for task in list(self._tasks):
            task.cancel()
        if self._sender is not None:
            await self._outbox.put(None)
            await self._sender
        await asyncio.gather(self._ticker or asyncio.sleep(0), *self._tasks, return_exceptions=True)

    # --- outgoing -----------------------------------------------------------------------

    def _enqueue(self, actions: list[Action]) -> None:
        for action in actions:
            self._outbox.put_nowait(action)

    async def _send_loop(self) -> None:
        """One sender keeps publishes in the order the engine made them."""
        while (action := await self._outbox.get()) is not None:
            try:
                if isinstance(action, Publish):
                    await self.nc.publish(action.subject, action.payload)
                else:
                    self._spawn(self._pull(action))
            except NatsError as e:  # disconnected: the periodic announce/pull recovers
                log.debug("sync publish failed: %s", e)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self._enqueue(self.engine.tick(self.clock()))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pull(self, req: Request) -> None:
        try:
            reply = await self.nc.request(req.subject, req.payload, timeout=req.timeout)
        except (NatsError, TimeoutError) as e:
            self._enqueue(self.engine.on_pull_failed(req.peer, req.pull_id, self.clock(), str(e)))
            return
        msg = self.engine.decode(req.peer, reply.data, self.clock())
        if isinstance(msg, EventsFrame):
            await self._ingest(req.peer, msg)
        else:
            detail = "reply is not an events frame"
            self._enqueue(self.engine.on_pull_failed(req.peer, req.pull_id, self.clock(), detail))

    # --- incoming -----------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        try:
            await self._dispatch(msg)
        except TillmeshError as e:  # e.g. the log closed under us; the next tick retries
            log.warning("sync: %s on %s", e, msg.subject)

    async def _dispatch(self, msg: Msg) -> None:
        if msg.subject.startswith("tm.pull."):
            await self._serve(msg)
            return
        peer = peer_from_subject(msg.subject)
        if peer is None or peer == self.engine.replica_id:
            return
        decoded = self.engine.decode(peer, msg.data, self.clock())
        if isinstance(decoded, VersionVectorMsg):
            self._enqueue(self.engine.on_vv(peer, decoded, self.clock()))
        elif isinstance(decoded, EventsFrame):
            await self._ingest(peer, decoded)

    async def _serve(self, msg: Msg) -> None:
        peer = peer_from_inbox(msg.reply) if msg.reply else None
        if peer is None:
            return
        req = self.engine.decode(peer, msg.data, self.clock())
        if not isinstance(req, PullRequest):
            return
        plan = self.engine.on_pull_request(peer, req, self.clock())
        raws = [raw for read in plan.reads for raw in await self.log.read_range(*read)]
        await msg.respond(self.engine.build_reply(plan, raws))

    async def _ingest(self, peer: str, frame: EventsFrame) -> None:
        events = self.engine.admit(peer, frame, self.clock())
        self._enqueue(self.engine.read_ahead(self.clock()))  # the next pull, meanwhile
        try:
            result = await self.log.ingest(events, peer)
        except BaseException:
            self._enqueue(self.engine.on_ingest_failed(peer, frame, self.clock()))
            raise
        outcome = IngestOutcome.of(result, self.log.version_vector())
        self._enqueue(self.engine.on_frame(peer, frame, outcome, self.clock()))

    def _on_durable(self, events: list[Event]) -> None:
        """Log listener: push our own new events, and let the engine see the new vector."""
        now = self.clock()
        own = [encode_event(ev) for ev in events if ev.origin == self.engine.replica_id]
        if own:
            self._enqueue(self.engine.on_local_events(own, now))
        self._enqueue(self.engine.on_local_vv(self.log.version_vector(), now))
