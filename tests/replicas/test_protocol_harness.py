"""A simulated network of sync engines: in-memory logs, a faulty router, a fake clock.

Not tests itself; the `test_protocol_*` modules import it. Everything is driven by
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
from collections.abc import Iterable
from dataclasses import dataclass, field

import msgspec

from tillmesh.core.events import (
    SCHEMA_VERSION,
    Event,
    StockReceived,
    decode_event,
    encode_body,
    encode_event,
    event_hash,
)
from tillmesh.replicas.protocol import (
    MIN_FRAME_BYTES,
    Action,
    EventsFrame,
    IngestOutcome,
    Message,
    Publish,
    PullRequest,
    Request,
    VersionVectorMsg,
    decode_message,
    encode_message,
    holds,
)
from tillmesh.replicas.sync import SyncEngine
from tillmesh.replicas.sync_config import SyncConfig

__all__ = [
    "FAST",
    "Faults",
    "Hostile",
    "MemLog",
    "Node",
    "Sim",
    "make_chain",
    "origins_of",
]

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
        ev = Event(origin, seq, seq << 16, SCHEMA_VERSION, _TYPE, _BODY, prev)
        prev = event_hash(ev)
        raws.append(encode_event(ev))
    return raws


class MemLog:
    """The EventLog contract in memory: contiguous per origin, gaps held, chains checked."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id
        self.in_scope = holds(replica_id)
        self.events: dict[str, list[bytes]] = {}
        self.hashes: dict[str, list[bytes]] = {}
        self.pending: dict[tuple[str, int], Event] = {}
        self.out_of_scope_offered = 0

    def vv(self) -> dict[str, int]:
        return {o: len(raws) for o, raws in self.events.items() if raws}

    def append(self, n: int) -> list[bytes]:
        own = self.hashes.get(self.replica_id, [])
        raws = make_chain(self.replica_id, n, own[-1] if own else b"", len(own) + 1)
        self.ingest(map(decode_event, raws))
        return raws

    def read_range(self, origin: str, from_seq: int, limit: int) -> list[bytes]:
        return self.events.get(origin, [])[from_seq - 1 : from_seq - 1 + limit]

    def ingest(self, events: Iterable[Event]) -> IngestOutcome:
        counts = {"accepted": 0, "duplicates": 0, "held": 0, "rejected": 0}
        for ev in events:
            counts[self._ingest_one(ev)] += 1
        return IngestOutcome(**counts, vv=self.vv(), detail="refused" if counts["rejected"] else "")

    def _ingest_one(self, ev: Event) -> str:
        if not self.in_scope(ev.origin):
            self.out_of_scope_offered += 1
            return "rejected"
        hashes = self.hashes.setdefault(ev.origin, [])
        if ev.seq <= len(hashes):
            return "duplicates" if hashes[ev.seq - 1] == event_hash(ev) else "rejected"
        if ev.seq > len(hashes) + 1:
            self.pending.setdefault((ev.origin, ev.seq), ev)  # first offer wins, as in SQL
            return "held"
        if not self._accept(ev):
            return "rejected"
        self._drain(ev.origin)
        return "accepted"

    def _accept(self, ev: Event) -> bool:
        hashes = self.hashes[ev.origin]
        if ev.prev != (hashes[-1] if hashes else b""):
            return False
        hashes.append(event_hash(ev))
        self.events.setdefault(ev.origin, []).append(encode_event(ev))
        return True

    def _drain(self, origin: str) -> None:
        while (ev := self.pending.pop((origin, len(self.hashes[origin]) + 1), None)) is not None:
            if not self._accept(ev):
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


class Node:
    """An honest replica: a MemLog, a SyncEngine, and the transport glue between them."""

    def __init__(self, replica_id: str, config: SyncConfig) -> None:
        self.id = replica_id
        self.log = MemLog(replica_id)
        self.engine = SyncEngine(replica_id, config=config)
        self.own: list[bytes] = []  # every event this replica authored, the ground truth
        self.requests: list[PullRequest] = []  # requests it served, for window assertions
        self.frames_in: list[tuple[str, EventsFrame]] = []

    def append(self, n: int, now: float) -> list[Action]:
        raws = self.log.append(n)
        self.own.extend(raws)
        return self.engine.on_local_events(raws, now) + self.engine.on_local_vv(self.log.vv(), now)

    def tick(self, now: float) -> list[Action]:
        return self.engine.tick(now)

    def on_publish(self, src: str, payload: bytes, now: float) -> list[Action]:
        msg = self.engine.decode(src, payload, now)
        if isinstance(msg, VersionVectorMsg):
            return self.engine.on_vv(src, msg, now)
        if isinstance(msg, EventsFrame):
            return self._ingest(src, msg, now)
        return []

    def on_request(self, src: str, payload: bytes, now: float) -> bytes | None:
        msg = self.engine.decode(src, payload, now)
        if not isinstance(msg, PullRequest):
            return None
        self.requests.append(msg)
        plan = self.engine.on_pull_request(src, msg, now)
        raws = [raw for read in plan.reads for raw in self.log.read_range(*read)]
        return self.engine.build_reply(plan, raws)

    def on_reply(self, src: str, pull_id: int, payload: bytes, now: float) -> list[Action]:
        msg = self.engine.decode(src, payload, now)
        if isinstance(msg, EventsFrame):
            return self._ingest(src, msg, now)
        return self.engine.on_pull_failed(src, pull_id, now, "unusable reply")

    def _ingest(self, src: str, frame: EventsFrame, now: float) -> list[Action]:
        self.frames_in.append((src, frame))
        events = self.engine.admit(src, frame, now)
        ahead = self.engine.read_ahead(now)  # as the transport: sent before the ingest
        outcome = self.log.ingest(events)
        return ahead + self.engine.on_frame(src, frame, outcome, now)


def sees(receiver: str, publisher: str) -> bool:
    """The broker permissions: HQ sees all; a till sees its store's replicas and HQ."""
    return receiver != publisher and holds(receiver)(publisher)


class Sim:
    """N replicas, a router with faults and cut links, a fake monotonic clock."""

    def __init__(self, nodes: Iterable[Node], seed: int = 0, faults: Faults | None = None) -> None:
        self.nodes = {n.id: n for n in nodes}
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
            self.execute(node.id, node.on_publish(p.src, p.payload, self.now))
        elif p.kind == "req":
            reply = node.on_request(p.src, p.payload, self.now)
            if reply is not None:
                self._send(Packet(0, 0, p.src, node.id, "rep", reply, p.pull_id))
        else:
            self.execute(node.id, node.on_reply(p.src, p.pull_id, p.payload, self.now))

    # --- driving ----------------------------------------------------------------------

    def step(self, dt: float = 0.05) -> None:
        self.now += dt
        while self.queue and self.queue[0].at <= self.now:
            self._deliver(heapq.heappop(self.queue))
        for node in list(self.nodes.values()):
            self.execute(node.id, node.tick(self.now))

    def append(self, replica_id: str, n: int) -> None:
        node = self.nodes[replica_id]
        self.execute(replica_id, node.append(n, self.now))

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

    def tick(self, now: float) -> list[Action]:
        if now - self.last_act < 0.3:
            return []
        self.last_act = now
        return [Publish("tm.ev.x", p) for p in self._payloads(0)]

    def on_publish(self, src: str, payload: bytes, now: float) -> list[Action]:
        self.seen.append(payload)
        return []

    def on_request(self, src: str, payload: bytes, now: float) -> bytes | None:
        msg = decode_message(payload, src)
        assert isinstance(msg, PullRequest)
        return self._payloads(msg.id)[-1]

    def on_reply(self, src: str, pull_id: int, payload: bytes, now: float) -> list[Action]:
        return []

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


def _frame_or_none(payload: bytes) -> EventsFrame | None:
    try:
        msg = _any_decoder.decode(payload)
    except Exception:
        return None
    return msg if isinstance(msg, EventsFrame) else None
