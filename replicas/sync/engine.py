"""The sync engine: one pure state machine per replica, deciding what to send and when.

Replication is push plus anti-entropy. Own events are pushed live; every replica
announces its version vector (on connect, periodically, soon after it changes),
and whoever sees a peer holding in-scope events it lacks pulls them in bounded
windows. Any replica serves any in-scope origin it holds, so convergence is
transitive (A-B and B-C links suffice for A and C to converge) and needs no master.

Pull planning: at most one pull in flight per peer and one per origin, each at
most `pull_window` events, spread over the peers that hold them, the most recently
heard first. It reads ahead: a full reply, once admitted, counts as held
and frees its peer for the next pull while the log ingests it (at most
`MAX_ADMITTED_PER_PEER` replies of a peer wait). Serving is filtered by the
requester's scope and paced by a per-requester `TokenBucket` (`PullServer`,
sync/serve.py).

Peers are untrusted. Garbage, rejected events, a vector the peer then cannot
serve, or an out-of-scope request are recorded as incidents and back the peer off
(its claims ignored, exponentially longer each time) while other peers serve
(`PeerTable`, sync/peers.py: what we know of each peer, and the incidents).

No I/O and no clock reads: the transport passes bytes and a monotonic `now` in,
runs the log reads and ingests the engine asks for, and executes the returned
`Action`s.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from broker.subjects import events_subject, pull_subject, vv_subject
from core.errors import TillmeshError
from core.events import RawEvent, decode_event
from core.vv import SeqRange
from replicas.errors import FrameError
from replicas.sync.config import (
    ADMITTED_TIMEOUT_FACTOR,
    BAD_FRAME,
    BAD_SCOPE,
    BUSY,
    DUPLICATE_FRAME,
    FORGED_REPLY,
    MAX_ADMITTED_PER_PEER,
    OUT_OF_SCOPE_REQUEST,
    REJECTED,
    SHORT,
    STRAY_REQUEST,
    TIMEOUT,
    UNNAMED,
    SyncConfig,
)
from replicas.sync.peers import PeerTable
from replicas.sync.protocol import (
    Action,
    EventsFrame,
    InflightStatus,
    IngestOutcome,
    Message,
    OriginStatus,
    Publish,
    PullRequest,
    Request,
    ServePlan,
    SyncStatus,
    VersionVectorMsg,
    build_frames,
    decode_message,
    encode_message,
    holds,
    scope_label,
)
from replicas.sync.serve import PullServer

__all__ = ["SyncEngine"]


@dataclass(frozen=True)
class _Pull:
    id: int
    peer: str
    ranges: tuple[SeqRange, ...]
    sent_at: float
    deadline: float


@dataclass(frozen=True)
class _Admitted:
    """A pull reply handed to the log and not yet ingested: what it brings, per origin."""

    pull: _Pull
    brings: dict[str, int]  # origin -> highest seq in the frame
    deadline: float  # forgotten then if the transport never reports the ingest
    full: bool  # served all it was asked, or said there is more: worth reading ahead


class SyncEngine:
    """The sync protocol of one replica. Every method is synchronous and I/O-free."""

    def __init__(
        self,
        replica_id: str,
        in_scope: Callable[[str], bool] | None = None,
        config: SyncConfig | None = None,
        *,
        vv: Mapping[str, int] | None = None,
        requester_scope: Callable[[str], Callable[[str], bool]] = holds,
        serves: Callable[[str], bool] | None = None,
        served_vv: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """`serves` / `served_vv`: what pulls are answered from, when that is more than
        what this engine pulls and ingests (`in_scope`, its own vector): an HQ ingest
        worker writes its share of the stores but serves HQ's origin too, read from the
        shared database. By default both are `in_scope` and the engine's own vector."""
        self.replica_id = replica_id
        self.in_scope = in_scope or holds(replica_id)
        self._served_vv = served_vv
        self.config = config or SyncConfig()
        self._requester_scope = requester_scope
        self._vv: dict[str, int] = {o: s for o, s in (vv or {}).items() if self.in_scope(o)}
        self.peers = PeerTable(self.config)  # what we know of each peer, and the incidents
        self._server = PullServer(replica_id, serves or self.in_scope, self.config, requester_scope)
        self._inflight: dict[str, _Pull] = {}  # by peer
        self._admitted: dict[int, _Admitted] = {}  # by pull id: replies being ingested
        self._next_pull_id = 0
        self._last_announce = -math.inf
        self._vv_dirty = True
        self._missing_since: dict[str, float] = {}  # origin -> when we first lacked some
        self._push_buffer: list[bytes] = []
        self._push_since = math.inf

    # --- inbound bytes ------------------------------------------------------------------

    def decode(self, peer: str, payload: bytes, now: float) -> Message | None:
        """Decode a peer's bytes; on garbage, record the incident and return None."""
        try:
            return decode_message(payload, peer, self.config.max_frame_bytes)
        except FrameError as e:
            self.peers.hostile(peer, BAD_FRAME, e.detail, now)
            return None

    # --- own state ----------------------------------------------------------------------

    def on_connected(self, now: float) -> list[Action]:
        """(Re)connected: announce at once so peers can pull from us and we learn theirs."""
        return self._announce(now)

    def on_local_vv(self, vv: Mapping[str, int], now: float) -> list[Action]:
        self._merge_own_vv(vv)
        return self._announce_if_due(now) + self._plan_pulls(now)

    def on_local_events(self, raws: Sequence[bytes], now: float) -> list[Action]:
        """Our own newly durable events (envelope bytes, in seq order): push them live."""
        if not self._push_buffer:
            self._push_since = now
        self._push_buffer.extend(raws)
        buffered = sum(len(r) for r in self._push_buffer)
        if buffered >= self.config.max_frame_bytes // 2 or self._push_due(now):
            return self._flush_push()
        return []

    def build_frames(self, raws: Sequence[bytes], more: bool = False) -> list[bytes]:
        return build_frames(self.replica_id, raws, self.config.max_frame_bytes, more)

    def _push_due(self, now: float) -> bool:
        return bool(self._push_buffer) and now - self._push_since >= self.config.push_linger

    def _flush_push(self) -> list[Action]:
        raws, self._push_buffer = self._push_buffer, []
        subject = events_subject(self.replica_id)
        return [Publish(subject, frame) for frame in self.build_frames(raws)]

    def _merge_own_vv(self, vv: Mapping[str, int]) -> None:
        for origin, seq in vv.items():
            if seq > self._vv.get(origin, 0) and self.in_scope(origin):
                self._vv[origin] = seq
                self._vv_dirty = True
                if origin in self._missing_since and seq >= self.peers.claimed(origin):
                    del self._missing_since[origin]  # caught up with every claim

    def _announce_if_due(self, now: float) -> list[Action]:
        since = now - self._last_announce
        due = since >= self.config.announce_interval
        if due or (self._vv_dirty and since >= self.config.announce_min_gap):
            return self._announce(now)
        return []

    def _announce(self, now: float) -> list[Action]:
        self._last_announce, self._vv_dirty = now, False
        msg = VersionVectorMsg(self.replica_id, dict(self._vv), scope_label(self.replica_id))
        return [Publish(vv_subject(self.replica_id), encode_message(msg))]

    # --- peers' vectors and pulls -------------------------------------------------------

    def on_vv(self, peer: str, msg: VersionVectorMsg, now: float) -> list[Action]:
        if peer == self.replica_id:
            return []
        if msg.scope != scope_label(peer):
            self.peers.hostile(peer, BAD_SCOPE, f"announced scope {msg.scope!r}", now)
            return []
        if (
            peer not in self.peers.by_name
        ):  # a newcomer should learn our vector soon, not next period
            self._vv_dirty = True
        state = self.peers.get(peer)
        for origin, seq in msg.vv.items():
            if self.in_scope(origin) and seq > state.announced.get(origin, 0):
                state.announced[origin] = seq
        for origin, seq in msg.vv.items():  # max: a reordered old announcement is harmless
            if self.in_scope(origin) and seq > state.vv.get(origin, 0):
                state.vv[origin] = seq
                if seq > self._vv.get(origin, 0):
                    self._missing_since.setdefault(origin, now)
        state.heard_at = now
        return self._announce_if_due(now) + self._plan_pulls(now)

    def _usable(self, now: float) -> list[str]:
        """Peers we may send a pull to now: not busy with one, not backed off."""
        return [
            name
            for name, p in self.peers.by_name.items()
            if name not in self._inflight and p.avoid_until <= now and self._may_read_ahead(name)
        ]

    def _may_read_ahead(self, peer: str) -> bool:
        """A short or empty reply is judged (after its ingest) before that peer is asked
        again; full ones let it serve the next range meanwhile, up to the bound."""
        waiting = [a for a in self._admitted.values() if a.pull.peer == peer]
        return len(waiting) < MAX_ADMITTED_PER_PEER and all(a.full for a in waiting)

    def _wanted(self, peers: Sequence[str]) -> list[tuple[str, int]]:
        """(origin, first missing seq) that some of `peers` hold and no pull covers, biggest lag
        first."""
        claimed = {r[0] for pull in self._inflight.values() for r in pull.ranges}
        have = self._held_or_coming()
        best: dict[str, int] = {}
        for name in peers:
            for origin, seq in self.peers.by_name[name].vv.items():
                if seq > have.get(origin, 0) and origin not in claimed:
                    best[origin] = max(best.get(origin, 0), seq)
        order = sorted(best, key=lambda o: (have.get(o, 0) - best[o], o))
        return [(o, have.get(o, 0) + 1) for o in order]

    def _held_or_coming(self) -> dict[str, int]:
        """Our vector, raised by the replies being ingested (read-ahead plans past them)."""
        have = dict(self._vv)
        for admitted in self._admitted.values():
            for origin, seq in admitted.brings.items():
                if seq > have.get(origin, 0):
                    have[origin] = seq
        return have

    def _plan_pulls(self, now: float) -> list[Action]:
        free = self._usable(now)
        window = self.config.pull_window
        drafts: dict[str, list[SeqRange]] = {}
        room: dict[str, int] = {}
        for origin, first in self._wanted(free):
            holders = [
                n
                for n in free
                if self.peers.by_name[n].vv.get(origin, 0) >= first and room.get(n, window) > 0
            ]
            if not holders:
                continue
            # Spread first (a peer already given a range this round goes last), then recency.
            name = min(holders, key=lambda n: (n in drafts, -self.peers.by_name[n].heard_at, n))
            left = room.get(name, window)
            last = min(self.peers.by_name[name].vv[origin], first + left - 1)
            # (`first` may be past our vector by a reply still being ingested: if that
            # ingest fails, the gap is held by the log and pulled again next round.)
            drafts.setdefault(name, []).append((origin, first, last))
            room[name] = left - (last - first + 1)
        return [self._send_pull(name, ranges, now) for name, ranges in drafts.items()]

    def _send_pull(self, peer: str, ranges: list[SeqRange], now: float) -> Action:
        self._next_pull_id += 1
        pull = _Pull(self._next_pull_id, peer, tuple(ranges), now, now + self.config.pull_timeout)
        self._inflight[peer] = pull
        size = sum(last - first + 1 for _, first, last in ranges)
        req = PullRequest(self.replica_id, pull.id, ranges, size, self.config.max_frame_bytes)
        subject = pull_subject(peer, self.replica_id)
        return Request(subject, encode_message(req), self.config.pull_timeout, peer, pull.id)

    def on_pull_failed(self, peer: str, pull_id: int, now: float, detail: str = "") -> list[Action]:
        """The transport got no usable reply (timeout, no responders, undecodable)."""
        pull = self._inflight.get(peer)
        if pull is None or pull.id != pull_id:
            return []
        del self._inflight[peer]
        self.peers.soft(peer, TIMEOUT, detail or f"pull {pull_id} got no reply", now)
        self.peers.avoid(peer, now + self.config.retry_backoff)
        return self._plan_pulls(now)

    # --- frames in ------------------------------------------------------------------

    def admit(self, peer: str, frame: EventsFrame, now: float) -> list[RawEvent]:
        """The frame's events worth handing to `log.ingest(events, peer)`, each beside
        the bytes it came as (the log stores those, so nothing is encoded again).

        Drops (as a REJECTED incident) envelopes that do not decode and events of
        origins the sender cannot legitimately hold: our log alone would accept them
        if they are in *our* scope (HQ's is everything), so a till of one store could
        otherwise inject another store's history.
        """
        sender_holds = self._requester_scope(peer)
        events: list[RawEvent] = []
        refused = ""
        for raw in frame.events:
            try:
                ev = decode_event(raw)
            except TillmeshError as e:
                refused = refused or str(e)
                continue
            if sender_holds(ev.origin) and self.in_scope(ev.origin):
                events.append(RawEvent(ev, raw))
            else:
                refused = refused or f"{ev.origin!r} is outside the sender's scope"
        if refused:
            dropped = len(frame.events) - len(events)
            self.peers.hostile(peer, REJECTED, f"{dropped} dropped before ingest: {refused}", now)
        self._note_reply(peer, frame, events, now)
        return events

    def _note_reply(
        self, peer: str, frame: EventsFrame, events: list[RawEvent], now: float
    ) -> None:
        """A reply to our pull frees the peer for the next pull while the log ingests it."""
        pull = self._inflight.get(peer)
        if pull is None or frame.pull != pull.id:
            return
        del self._inflight[peer]
        brings: dict[str, int] = {}
        for ev, _ in events:
            if ev.seq > brings.get(ev.origin, 0):
                brings[ev.origin] = ev.seq
        served_all = all(brings.get(origin, 0) >= last for origin, _, last in pull.ranges)
        full = bool(events) and (frame.more or served_all)
        # The transport reports every ingest (on_frame / on_ingest_failed); the deadline
        # is a backstop only, long enough for a frame queued behind many others.
        deadline = now + ADMITTED_TIMEOUT_FACTOR * self.config.pull_timeout
        self._admitted[pull.id] = _Admitted(pull, brings, deadline, full)

    def read_ahead(self, now: float) -> list[Action]:
        """After `admit`, before the ingest: the pulls that can go out meanwhile."""
        return self._plan_pulls(now)

    def on_ingest_failed(self, peer: str, frame: EventsFrame, now: float) -> list[Action]:
        """The log could not take an admitted frame (e.g. closing): plan without it."""
        admitted = self._admitted.get(frame.pull)
        if admitted is not None and admitted.pull.peer == peer:
            del self._admitted[frame.pull]
        return self._plan_pulls(now)

    def on_frame(
        self, peer: str, frame: EventsFrame, outcome: IngestOutcome, now: float
    ) -> list[Action]:
        """After the transport ingested `admit(frame)` into the log: judge, plan what next."""
        if peer == self.replica_id:
            return []
        self._merge_own_vv(outcome.vv)
        admitted = self._admitted.get(frame.pull)
        if admitted is not None and admitted.pull.peer == peer:
            del self._admitted[frame.pull]
            self._judge_reply(admitted.pull, frame, outcome, now)
        else:  # live push, or a late / replayed reply: ingested idempotently either way
            self._judge_push(peer, frame, outcome, now)
        return self._announce_if_due(now) + self._plan_pulls(now)

    def _judge_push(self, peer: str, frame: EventsFrame, out: IngestOutcome, now: float) -> None:
        if out.rejected:
            self.peers.hostile(peer, REJECTED, f"{out.rejected} refused: {out.detail}", now)
        elif frame.events and out.duplicates == len(frame.events) and _relayed(peer, frame):
            # A till pushes its own events; one that raced our pull of them, or lingered
            # behind its next announcement, arrives with only known events: normal, and
            # no different from a replay of it (harmless either way). Known events of
            # other origins pushed as its own are a replay.
            self.peers.soft(peer, DUPLICATE_FRAME, f"{len(frame.events)} known events", now)

    def _judge_reply(self, pull: _Pull, frame: EventsFrame, out: IngestOutcome, now: float) -> None:
        peer = self.peers.get(pull.peer)
        if out.rejected:
            self.peers.hostile(pull.peer, REJECTED, f"{out.rejected} refused: {out.detail}", now)
            return
        unmet = [(o, last) for o, _, last in pull.ranges if self._vv.get(o, 0) < last]
        if not unmet:
            peer.strikes = 0
        elif out.held:  # served, but behind a gap (an earlier reply failed): pulled again
            return
        elif frame.more and not out.accepted:
            self.peers.soft(pull.peer, BUSY, f"pull {pull.id} made no progress", now)
            self.peers.avoid(pull.peer, now + self.config.retry_backoff)
        elif not frame.more:
            for origin, _ in unmet:  # it evidently holds no more than it gave
                peer.vv[origin] = min(peer.vv.get(origin, 0), self._vv.get(origin, 0))
            origin, last = unmet[0]
            have = self._vv.get(origin, 0)
            self.peers.hostile(
                pull.peer, SHORT, f"claimed {origin} to {last}, served to {have}", now
            )

    # --- serving ----------------------------------------------------------------------

    def on_pull_request(self, peer: str, req: PullRequest, now: float) -> ServePlan:
        """Which rows to serve `peer`: in its scope and ours, held by us, within budget."""
        self.peers.get(peer)  # a requester is a known peer from now on (status lists it)
        held = self._served_vv() if self._served_vv is not None else self._vv
        plan, refused = self._server.plan(peer, req, held, now)
        if refused:
            self.peers.hostile(peer, OUT_OF_SCOPE_REQUEST, f"asked for {refused[0]!r}", now)
        return plan

    def build_reply(self, plan: ServePlan, raws: Sequence[bytes]) -> bytes:
        """The one reply frame for `plan`, from the rows read (cut to fit; `more` if cut)."""
        return self._server.reply(plan, raws)

    def on_forged_reply(self, peer: str, reply: str, now: float) -> None:
        """`peer` sent a pull whose reply inbox is not its own: refused unread, so it
        spends none of the budget we keep for anyone. Blamed on `peer`, whose name
        the fenced subject gave, never on the replica the inbox names."""
        self.peers.hostile(peer, FORGED_REPLY, f"asked for its reply on {reply!r}", now)

    def on_stray_request(self, subject: str, now: float) -> None:
        """A pull on a subject naming no requester we serve: refused unread. No fenced
        name to blame, so it is counted under `UNNAMED`, without a backoff."""
        self.peers.soft(UNNAMED, STRAY_REQUEST, f"pull on {subject!r}", now)

    # --- time ---------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Expire pulls, flush a lingering push, announce when due, plan pulls."""
        actions: list[Action] = []
        for peer, pull in list(self._inflight.items()):
            if pull.deadline <= now:
                actions += self.on_pull_failed(peer, pull.id, now, f"pull {pull.id} timed out")
        for pull_id, admitted in list(self._admitted.items()):
            if admitted.deadline <= now:  # the transport never reported its ingest
                del self._admitted[pull_id]
        if self._push_due(now):
            actions += self._flush_push()
        return actions + self._announce_if_due(now) + self._plan_pulls(now)

    # --- status -------------------------------------------------------------------------

    @property
    def vv(self) -> dict[str, int]:
        return dict(self._vv)

    def receipts(self) -> dict[str, int]:
        """Per peer, how many of our own events it has told us it holds durably."""
        return self.peers.receipts(self.replica_id)

    def holders(self, origin: str, seq: int) -> list[str]:
        """The peers that have told us they hold `origin`'s events up to `seq` durably
        (their announced vectors), sorted: the delivery receipt of one event."""
        return sorted(n for n, p in self.peers.by_name.items() if p.vv.get(origin, 0) >= seq)

    def status(self, now: float) -> SyncStatus:
        return SyncStatus(
            replica_id=self.replica_id,
            vv=dict(self._vv),
            peers=self.peers.statuses(now),
            lag=self.peers.lag(self._vv, now),
            inflight=[
                InflightStatus(p.peer, p.id, p.ranges, now - p.sent_at)
                for p in self._inflight.values()
            ],
            incidents=self.peers.incidents(),
            receipts=self.receipts(),
            origins=self._origins(now),
        )

    def _origins(self, now: float) -> dict[str, OriginStatus]:
        lag = self.peers.lag(self._vv, now)
        names = {*self._vv, *lag, *(n for n in self.peers.by_name if self.in_scope(n))}
        out = {}
        for origin in sorted(names):
            if not lag.get(origin):  # caught up, or a claim lowered after a short reply
                self._missing_since.pop(origin, None)
            since = self._missing_since.get(origin)
            peer = self.peers.by_name.get(origin)
            heard = peer is not None and peer.heard_at > -math.inf
            out[origin] = OriginStatus(
                held=self._vv.get(origin, 0),
                behind=lag.get(origin, 0),
                missing_for=None if since is None else now - since,
                last_seen=now - peer.heard_at if heard and peer is not None else None,
            )
        return out


def _relayed(peer: str, frame: EventsFrame) -> bool:
    """Whether a pushed frame carries events of other origins than its sender's."""
    for raw in frame.events:
        try:
            if decode_event(raw).origin != peer:
                return True
        except TillmeshError:
            return True
    return False
