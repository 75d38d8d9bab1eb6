"""A simulated network of replicas: in-memory logs, a faulty router, a fake clock.

Each honest node runs the same `SyncDriver` the NATS transport runs, over a `MemLog`
(the log side) and a `SimWire` into the router (the wire side), so the simulator tests
the code that ships. The driver's coroutines never wait on anything here, so each
call is run to completion at once (`run_now`) and the simulation stays synchronous.

A kit, not tests: the `test_protocol_*` modules import it. Everything is driven by
one seeded `random.Random`, so a failing run replays exactly.

The router follows the broker's subject permissions: a till sees the publishes of
its own store and of HQ, HQ sees everything; a pull request reaches only the
replica it names, and its reply comes back to the requester. Each packet can be
dropped, duplicated or delayed (delays reorder); a cut link carries nothing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from broker.subjects import events_subject
from core.batch import IngestResult
from core.errors import ChainBroken, Equivocation, OutOfScope, TillmeshError
from core.events import (
    Event,
    RawEvent,
    StockReceived,
    decode_event,
    encode_body,
    encode_event,
    event_hash,
)
from replicas.sync.config import SyncConfig
from replicas.sync.driver import SyncDriver
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import (
    MIN_FRAME_BYTES,
    Action,
    EventsFrame,
    Message,
    Publish,
    PullRequest,
    Request,
    VersionVectorMsg,
    decode_message,
    encode_message,
    holds,
)

__all__ = [
    "FAST",
    "Faults",
    "Hostile",
    "MemLog",
    "Node",
    "Sim",
    "make_chain",
    "origins_of",
    "run_now",
]

T = TypeVar("T")


def run_now(coro: Coroutine[object, object, T]) -> T:
    """Run a coroutine that never suspends (nothing here waits on I/O) to its end."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a simulated call suspended: nothing in the simulator may wait")


FAST = SyncConfig(
    max_frame_bytes=MIN_FRAME_BYTES,
    pull_window=100,
    pull_timeout=1.0,
    announce_interval=1.0,
    announce_min_gap=0.1,
    retry_backoff=0.5,
    incident_backoff=2.0,
    incident_backoff_max=8.0,
)
_TYPE, _BODY = encode_body(StockReceived(sku="SKU-1", qty=1))
_any_decoder = msgspec.msgpack.Decoder(Message)


def make_chain(origin: str, n: int, prev: bytes = b"", first_seq: int = 1) -> list[bytes]:
    """`n` correctly chained envelopes of `origin`, as its log would write them."""
    raws = []
    for seq in range(first_seq, first_seq + n):
        ev = Event(origin, seq, seq << 16, 1, _TYPE, _BODY, prev)  # as a log writes it
        prev = event_hash(ev)
        raws.append(encode_event(ev))
    return raws


class MemLog:
    """The EventLog contract in memory: contiguous per origin, gaps held, chains checked."""

    def __init__(self, replica_id: str, in_scope: Callable[[str], bool] | None = None) -> None:
        self.replica_id = replica_id
        self.in_scope = in_scope or holds(replica_id)
        self.events: dict[str, list[bytes]] = {}
        self.hashes: dict[str, list[bytes]] = {}
        self.pending: dict[tuple[str, int], Event] = {}
        self.out_of_scope_offered = 0

    def version_vector(self) -> dict[str, int]:
        return {o: len(raws) for o, raws in self.events.items() if raws}

    vv = version_vector

    def append(self, n: int) -> list[RawEvent]:
        own = self.hashes.get(self.replica_id, [])
        raws = make_chain(self.replica_id, n, own[-1] if own else b"", len(own) + 1)
        run_now(self.ingest([RawEvent(decode_event(raw), raw) for raw in raws]))
        return [RawEvent(decode_event(raw), raw) for raw in raws]

    async def read_range(self, origin: str, from_seq: int, limit: int) -> list[bytes]:
        return self.events.get(origin, [])[from_seq - 1 : from_seq - 1 + limit]

    async def ingest(self, events: Sequence[Event | RawEvent], peer: str = "") -> IngestResult:
        result = IngestResult()
        for item in events:
            ev = item.event if isinstance(item, RawEvent) else item
            try:
                outcome = self._ingest_one(ev)
            except TillmeshError as e:
                result.rejected.append(e)
                continue
            if outcome == "held":
                result.held += 1
            elif outcome == "duplicate":
                result.duplicates += 1
            else:
                result.stored.append(RawEvent(ev, encode_event(ev)))
        return result

    def _ingest_one(self, ev: Event) -> str:
        if not self.in_scope(ev.origin):
            self.out_of_scope_offered += 1
            raise OutOfScope(ev.origin, self.replica_id)
        hashes = self.hashes.setdefault(ev.origin, [])
        if ev.seq <= len(hashes):
            offered = event_hash(ev)
            if hashes[ev.seq - 1] == offered:
                return "duplicate"
            raise Equivocation(ev.origin, ev.seq, hashes[ev.seq - 1], offered)
        if ev.seq > len(hashes) + 1:
            self.pending.setdefault((ev.origin, ev.seq), ev)  # first offer wins, as in SQL
            return "held"
        self._accept(ev)
        self._drain(ev.origin)
        return "accepted"

    def _accept(self, ev: Event) -> None:
        hashes = self.hashes[ev.origin]
        head = hashes[-1] if hashes else b""
        if ev.prev != head:
            raise ChainBroken(ev.origin, ev.seq, head, ev.prev)
        hashes.append(event_hash(ev))
        self.events.setdefault(ev.origin, []).append(encode_event(ev))

    def _drain(self, origin: str) -> None:
        while (ev := self.pending.pop((origin, len(self.hashes[origin]) + 1), None)) is not None:
            try:
                self._accept(ev)
            except ChainBroken:
                return  # a forged held event: dropped, the real one is pulled again


@dataclass(order=True)
class Packet:
    at: float
    order: int
    dst: str = field(compare=False)
    src: str = field(compare=False)
    kind: str = field(compare=False)  # "pub" | "req" | "rep"
    payload: bytes = field(compare=False)
    pull_id: int = field(compare=False, default=0)


@dataclass
class Faults:
    drop: float = 0.0
    dup: float = 0.0
    max_delay: float = 0.0


class SimWire:
    """The driver's `Wire` into the simulator's router: actions become packets."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.sim: Sim | None = None

    def send(self, actions: Sequence[Action]) -> None:
        if self.sim is not None:
            self.sim.execute(self.node.id, actions)


class Node:
    """An honest replica: a MemLog and a SyncEngine joined by the shipping SyncDriver."""

    def __init__(self, replica_id: str, config: SyncConfig) -> None:
        self.id = replica_id
        self.log = MemLog(replica_id)
        self.engine = SyncEngine(replica_id, config=config)
        self.wire = SimWire(self)
        self.driver = SyncDriver(self.engine, self.log, self.wire, clock=self._now)
        self.own: list[bytes] = []  # every event this replica authored, the ground truth
        self.requests: list[PullRequest] = []  # requests it served, for window assertions
        self.frames_in: list[tuple[str, EventsFrame]] = []

    def join(self, sim: Sim) -> None:
        self.wire.sim = sim

    def _now(self) -> float:
        return self.wire.sim.now if self.wire.sim is not None else 0.0

    def append(self, n: int) -> None:
        stored = self.log.append(n)
        self.own.extend(s.raw for s in stored)
        self.driver.on_durable(stored)

    def tick(self) -> None:
        self.driver.tick()

    def on_publish(self, src: str, payload: bytes) -> None:
        self._note_frame(src, payload)
        run_now(self.driver.on_publish(src, payload))

    def on_request(self, src: str, payload: bytes) -> bytes | None:
        msg = _message_or_none(payload)
        if isinstance(msg, PullRequest):
            self.requests.append(msg)
        return run_now(self.driver.on_request(src, payload))

    def on_reply(self, src: str, pull_id: int, payload: bytes) -> None:
        self._note_frame(src, payload)
        run_now(self.driver.on_reply(src, pull_id, payload))

    def _note_frame(self, src: str, payload: bytes) -> None:
        msg = _message_or_none(payload)
        if isinstance(msg, EventsFrame):
            self.frames_in.append((src, msg))


def sees(receiver: str, publisher: str) -> bool:
    """The broker permissions: HQ sees all; a till sees its store's replicas and HQ."""
    return receiver != publisher and holds(receiver)(publisher)


class Sim:
    """N replicas, a router with faults and cut links, a fake monotonic clock."""

    def __init__(self, nodes: Iterable[Node], seed: int = 0, faults: Faults | None = None) -> None:
        self.nodes = {n.id: n for n in nodes}
        for node in self.nodes.values():
            node.join(self)
        self.rng = random.Random(seed)
        self.faults = faults or Faults()
        self.cut: set[frozenset[str]] = set()
        self.now = 0.0
        self.queue: list[Packet] = []
        self._order = itertools.count()
        self.delivered = 0

    # --- topology ---------------------------------------------------------------------

    def link_up(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    def cut_link(self, a: str, b: str) -> None:
        self.cut.add(frozenset((a, b)))

    def isolate(self, a: str) -> None:
        for b in self.nodes:
            if b != a:
                self.cut_link(a, b)

    def heal(self) -> None:
        self.cut.clear()

    # --- routing ----------------------------------------------------------------------

    def execute(self, src: str, actions: Iterable[Action]) -> None:
        """Route what `src`'s wire sends: publishes to who may see them, requests to
        the replica they name (its reply comes back to `src` as a packet)."""
        for action in actions:
            if isinstance(action, Publish):
                for dst in self.nodes:
                    if sees(dst, src):
                        self._send(Packet(0, 0, dst, src, "pub", action.payload))
            elif isinstance(action, Request) and action.peer in self.nodes:
                self._send(Packet(0, 0, action.peer, src, "req", action.payload, action.pull_id))

    def _send(self, packet: Packet) -> None:
        if not self.link_up(packet.src, packet.dst) or self.rng.random() < self.faults.drop:
            return
        copies = 2 if self.rng.random() < self.faults.dup else 1
        for _ in range(copies):
            packet.at = self.now + self.rng.uniform(0, self.faults.max_delay)
            packet.order = next(self._order)
            heapq.heappush(self.queue, Packet(**vars(packet)))

    def _deliver(self, p: Packet) -> None:
        node = self.nodes[p.dst]
        self.delivered += 1
        if not self.link_up(p.src, p.dst):
            return  # cut while in flight
        if p.kind == "pub":
            node.on_publish(p.src, p.payload)
        elif p.kind == "req":
            reply = node.on_request(p.src, p.payload)
            if reply is not None:
                self._send(Packet(0, 0, p.src, node.id, "rep", reply, p.pull_id))
        else:
            node.on_reply(p.src, p.pull_id, p.payload)

    # --- driving ----------------------------------------------------------------------

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        while self.queue and self.queue[0].at <= self.now:
            self._deliver(heapq.heappop(self.queue))
        for node in list(self.nodes.values()):
            node.tick()

    def append(self, replica_id: str, n: int) -> None:
        node = self.nodes[replica_id]
        node.append(n)

    def run_until_converged(self, max_steps: int, honest: Iterable[str] | None = None) -> int:
        """Step until every honest replica holds exactly its in-scope truth; steps taken."""
        ids = list(honest or self.nodes)
        for i in range(max_steps):
            if self.converged(ids):
                return i
            self.step()
        raise AssertionError(f"not converged after {max_steps} steps: {self.diff(ids)}")

    def truth(self, ids: Iterable[str]) -> dict[str, list[bytes]]:
        return {rid: self.nodes[rid].own for rid in ids if self.nodes[rid].own}

    def expected(self, replica_id: str, ids: Iterable[str]) -> dict[str, list[bytes]]:
        scope = holds(replica_id)
        return {o: raws for o, raws in self.truth(ids).items() if scope(o)}

    def converged(self, ids: list[str]) -> bool:
        return not self.diff(ids)

    def diff(self, ids: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
        """Per replica, origins whose held events differ from the truth: (have, want)."""
        out = {}
        for rid in ids:
            node, want = self.nodes[rid], self.expected(rid, ids)
            have = {o: r for o, r in node.log.events.items() if r}
            if have != want or node.engine.vv != node.log.vv():
                keys = have.keys() | want.keys()
                out[rid] = {
                    o: (len(have.get(o, [])), len(want.get(o, [])))
                    for o in sorted(keys)
                    if have.get(o) != want.get(o)
                }
                out[rid]["<engine vv>"] = (
                    sum(node.engine.vv.values()),
                    sum(node.log.vv().values()),
                )
        return out


def origins_of(frame: EventsFrame) -> set[str]:
    return {decode_event(raw).origin for raw in frame.events}


class Hostile(Node):
    """A till that misbehaves in one `mode`; it holds nothing and serves nothing real.

    garbage   publishes and replies random bytes
    oversize  publishes and replies frames over the size limit
    liar      announces a vector it does not hold, replies with nothing
    foreign   pushes and replies validly chained events of another store
    replay    re-sends old frames: others' verbatim (wrong sender) and re-wrapped as
              its own, and answers pulls with an old reply
    """

    def __init__(self, replica_id: str, config: SyncConfig, mode: str, seed: int = 0) -> None:
        super().__init__(replica_id, config)
        self.mode = mode
        self.rng = random.Random(seed)
        self.limit = config.max_frame_bytes
        self.seen: list[bytes] = []  # others' publishes, for replay
        self.last_act = -1.0
        self.foreign = make_chain("s2/zz", 20)

    def tick(self) -> None:
        now = self._now()
        if now - self.last_act < 0.3:
            return
        self.last_act = now
        subject = events_subject(self.id)  # its own: the only subject it may publish on
        self.wire.send([Publish(subject, p) for p in self._payloads(0)])

    def on_publish(self, src: str, payload: bytes) -> None:
        self.seen.append(payload)

    def on_request(self, src: str, payload: bytes) -> bytes | None:
        msg = decode_message(payload, src)
        assert isinstance(msg, PullRequest)
        return self._payloads(msg.id)[-1]

    def on_reply(self, src: str, pull_id: int, payload: bytes) -> None:
        return

    def _payloads(self, pull_id: int) -> list[bytes]:
        mode, me = self.mode, self.id
        if mode == "garbage":
            return [self.rng.randbytes(self.rng.randint(0, 300)), b"\x94\xa2zz\xa0\x80\xa0"]
        if mode == "oversize":
            return [encode_message(EventsFrame(me, [b"\0" * self.limit], False, pull_id))]
        if mode == "liar":
            claim = {o: 10**6 for o in ("s1/t1", "s1/t2", "s1/t3", "hq")}
            vv = encode_message(VersionVectorMsg(me, claim, "s1"))
            return [vv, encode_message(EventsFrame(me, [], False, pull_id))]
        if mode == "foreign":
            return [encode_message(EventsFrame(me, self.foreign, False, pull_id))]
        return self._replays(pull_id)

    def _replays(self, pull_id: int) -> list[bytes]:
        old = [m for m in map(_frame_or_none, self.seen) if m is not None and m.events]
        if not old:
            return [encode_message(EventsFrame(self.id, [], False, pull_id))]
        verbatim = encode_message(self.rng.choice(old))
        stale_id = max(0, pull_id - 1)  # an answer to an older request
        rewrapped = EventsFrame(self.id, self.rng.choice(old).events, False, stale_id)
        return [verbatim, encode_message(rewrapped)]


def _message_or_none(payload: bytes) -> Message | None:
    """What a payload says, whoever sent it; None for what no peer would accept."""
    try:
        return _any_decoder.decode(payload)
    except (msgspec.DecodeError, ValueError, RecursionError):
        return None


def _frame_or_none(payload: bytes) -> EventsFrame | None:
    msg = _message_or_none(payload)
    return msg if isinstance(msg, EventsFrame) else None
