"""The one sync driver: feeds the pure `SyncEngine` from a log and a wire.

The engine decides everything and does no I/O; something has to hand it what
arrives, run the log calls it needs and carry out the actions it returns. That glue
is this class, and only this class, over two small Protocols:

- `SyncLog`, the log side (`core.log.EventLog` in a replica, an in-memory log in
  the simulator): its vector, `ingest`, `read_range`;
- `Wire`, the wire side (`transport.NatsWire` over nats-py, the simulator's router):
  it carries the engine's actions out, in order, and brings a pull's answer back
  through `on_reply` (or `on_pull_failed`).

So the seeded simulator (`tests/replicas/simnet.py`) drives exactly the code that
runs over NATS, as pycrdt's `Provider` runs over any `Channel`.

Bytes are decoded once on the way in (`admit` yields each event beside the bytes it
came as, and the log stores those bytes) and never re-encoded on the way out (the log
tells its listeners the stored bytes of each durable event, and those are pushed).

Usage::

    driver = SyncDriver(engine, log, wire, clock=time.monotonic)
    driver.start()                                  # announce what we hold
    await driver.on_publish("s1/t2", payload)       # a vector or a pushed frame
    reply = await driver.on_request("s1/t2", payload)  # serve a pull; None: ignore it
    driver.forged_reply("s1/t2", "_INBOX.s2.t1.x")  # a pull refused unread, recorded
    await driver.on_reply("s1/t2", pull_id, payload)   # the answer to our pull
    driver.tick()                                   # every `tick_interval`
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from core.batch import IngestResult
from core.events import Event, RawEvent
from core.signing import is_signed
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import Action, EventsFrame, IngestOutcome, PullRequest, VersionVectorMsg

# How far past a pull window a reply reads to end on a signed event: a log that checks
# signatures keeps one at least per 256 events of an origin (core.log's check slices).
READ_TO_SIGNED = 5_000

__all__ = ["SyncDriver", "SyncLog", "SyncObserver", "Wire"]


class SyncLog(Protocol):
    """What sync needs of a log."""

    def version_vector(self) -> Mapping[str, int]: ...

    async def ingest(self, events: Sequence[Event | RawEvent], peer: str = "") -> IngestResult: ...

    async def read_range(self, origin: str, from_seq: int, limit: int) -> list[bytes]: ...


class Wire(Protocol):
    """What sync needs of a network."""

    def send(self, actions: Sequence[Action]) -> None:
        """Carry the actions out in order: publish each `Publish`; send each `Request`
        and hand its answer to `SyncDriver.on_reply`, or its failure (no answer in
        `request.timeout`, link down) to `SyncDriver.on_pull_failed`."""
        ...


class SyncObserver(Protocol):
    """Told what sync did, for metrics (`replicas.metrics`); each call must be quick."""

    def pull_done(self, peer: str, ok: bool) -> None:
        """A pull we sent to `peer` was answered with events (ok) or failed."""
        ...

    def served(self, peer: str, events: int) -> None:
        """We answered `peer`'s pull with `events` events."""
        ...


class SyncDriver:
    """Runs one replica's `SyncEngine` between its log and a wire."""

    def __init__(
        self,
        engine: SyncEngine,
        log: SyncLog,
        wire: Wire,
        *,
        clock: Callable[[], float] = time.monotonic,
        observer: SyncObserver | None = None,
    ) -> None:
        self.engine, self.log, self.wire, self.clock = engine, log, wire, clock
        self.observer = observer

    @property
    def replica_id(self) -> str:
        return self.engine.replica_id

    # --- from the replica -------------------------------------------------------------

    def start(self) -> None:
        """Announce what the log holds, and plan the first pulls."""
        now = self.clock()
        self.wire.send(self.engine.on_local_vv(self.log.version_vector(), now))
        self.wire.send(self.engine.on_connected(now))

    def connected(self) -> None:
        """The link came back: announce at once rather than at the next period."""
        self.wire.send(self.engine.on_connected(self.clock()))

    def tick(self) -> None:
        self.wire.send(self.engine.tick(self.clock()))

    def on_durable(self, stored: Sequence[RawEvent]) -> None:
        """The log made these events durable: push our own, and note the new vector."""
        now = self.clock()
        own = [s.raw for s in stored if s.event.origin == self.engine.replica_id]
        if own:
            self.wire.send(self.engine.on_local_events(own, now))
        self.wire.send(self.engine.on_local_vv(self.log.version_vector(), now))

    # --- from peers -------------------------------------------------------------------

    async def on_publish(self, peer: str, payload: bytes) -> None:
        """A message `peer` published (the wire names the peer, never the payload)."""
        msg = self.engine.decode(peer, payload, self.clock())
        if isinstance(msg, VersionVectorMsg):
            self.wire.send(self.engine.on_vv(peer, msg, self.clock()))
        elif isinstance(msg, EventsFrame):
            await self._ingest(peer, msg)

    async def on_request(self, peer: str, payload: bytes) -> bytes | None:
        """Serve `peer`'s pull request: the reply's bytes, or None to leave it unanswered."""
        req = self.engine.decode(peer, payload, self.clock())
        if not isinstance(req, PullRequest):
            return None
        plan = self.engine.on_pull_request(peer, req, self.clock())
        raws = [raw for read in plan.reads for raw in await self._read_to_signed(*read)]
        if self.observer is not None:
            self.observer.served(peer, len(raws))
        return self.engine.build_reply(plan, raws)

    async def _read_to_signed(self, origin: str, first: int, limit: int) -> list[bytes]:
        """`limit` rows from `first`, and on to the next signed one if the last is not: a
        run must end on a signature the requester can check (`protocol.ends_signed`)."""
        rows = await self.log.read_range(origin, first, limit)
        if not rows or is_signed(rows[-1]):
            return rows
        further = await self.log.read_range(origin, first + len(rows), READ_TO_SIGNED)
        for k, raw in enumerate(further):
            if is_signed(raw):
                return rows + further[: k + 1]
        return rows  # none within reach: a log from before signing

    def forged_reply(self, peer: str, reply: str) -> None:
        """`peer`'s pull asked for its reply on `reply`, an inbox not its own: refused."""
        self.engine.on_forged_reply(peer, reply, self.clock())

    def stray_request(self, subject: str) -> None:
        """A pull on `subject`, which names no requester we serve: refused."""
        self.engine.on_stray_request(subject, self.clock())

    async def on_reply(self, peer: str, pull_id: int, payload: bytes) -> None:
        """The answer to our pull `pull_id` from `peer`."""
        msg = self.engine.decode(peer, payload, self.clock())
        if isinstance(msg, EventsFrame):
            if self.observer is not None:
                self.observer.pull_done(peer, True)
            await self._ingest(peer, msg)
        else:
            self.on_pull_failed(peer, pull_id, "reply is not an events frame")

    def on_pull_failed(self, peer: str, pull_id: int, detail: str) -> None:
        if self.observer is not None:
            self.observer.pull_done(peer, False)
        self.wire.send(self.engine.on_pull_failed(peer, pull_id, self.clock(), detail))

    async def _ingest(self, peer: str, frame: EventsFrame) -> None:
        received = self.engine.admit(peer, frame, self.clock())
        self.wire.send(self.engine.read_ahead(self.clock()))  # the next pull, meanwhile
        try:
            result = await self.log.ingest(received, peer)
        except BaseException:
            self.wire.send(self.engine.on_ingest_failed(peer, frame, self.clock()))
            raise
        outcome = IngestOutcome.of(result, self.log.version_vector())
        self.wire.send(self.engine.on_frame(peer, frame, outcome, self.clock()))
