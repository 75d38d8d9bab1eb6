"""One group-commit transaction, run in the writer's thread.

A `Transaction` takes local appends and remote ingests in arrival order, decides
each event's fate against the chain heads (accept, duplicate, hold, quarantine),
hands the accepted ones to the state fold, and writes everything with one
`executemany` per table. Chain heads are staged here and published to the log
only after COMMIT, so a failed batch leaves the in-memory view untouched.

What can be known of a remote event without the log (its hash, its canonical
bytes, its typed and validated body) is worked out beforehand by `check_events`
(`core.checks`), outside the writer's thread, so a group commit (which every queued sale waits
for) holds only the work that needs the log. It does not raise throughput: ingest
is bound by one core's worth of GIL-held Python plus SQLite (measured: two frames
in flight ingest no faster than one; see README "Figures").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple, NoReturn, Protocol

import msgspec

from core import segments
from core.checks import (
    NO_HEAD,
    CheckedEvent,
    Head,
    check_event,
    check_events,
    holds_card_data,
    recheck,
)
from core.clock import HybridClock
from core.compact import unfoldable
from core.errors import (
    ChainBroken,
    DecodeError,
    Equivocation,
    EventError,
    OutOfScope,
    OversizedError,
    SignatureError,
    TillmeshError,
    UnknownKey,
)
from core.events import (
    HQ,
    MAX_INT64,
    Body,
    Event,
    KeyRevoked,
    KeyRotated,
    LogSigned,
    RawEvent,
    decode_event,
    encode_event,
    event_hash,
)
from core.fold import FLAG_REVOKED, FLAG_SKEWED, FLAG_UNAPPLIED, Accepted, StateFold
from core.keys import KeyRegistry
from core.rotation import (
    Rotations,
    Vouchers,
    dump_rotations,
    evict_stored,
    folded_among,
    retired_suffix,
    take_unverified,
)
from core.signing import Signer, Verifier, decode_public_key

__all__ = [
    "MAX_QUARANTINE_ROWS",
    "Admitting",
    "CheckedEvent",
    "ClockAhead",
    "Head",
    "IngestResult",
    "Transaction",
    "accept_remote",
    "check_event",
    "check_events",
    "evidence_row",
    "place_remote",
    "trim_quarantine",
]

# Past this many refusals in one request the rest of it is dropped unread: one frame of
# 20,000 forged twins held every queued sale for 3 s of signature checks.
MAX_REFUSED_PER_REQUEST = 64
HELD_PEER = "(held)"  # names the sender of evidence refused when a held event drained
MAX_HELD_AHEAD = 1_000_000  # further ahead than this is not held: anti-entropy brings it later
# Evidence kept in quarantine. A hostile peer can send refused input without end, so the
# table is a ring: past this many rows the oldest go, down to 90% so a trim runs once per
# 10% of the cap, not per commit. No kind is spared: without signatures an equivocation
# is as cheap to forge as any other refused event. `meta.quarantine_dropped` counts them.
MAX_QUARANTINE_ROWS = 100_000


class ClockAhead(NamedTuple):
    """Events of one origin this replica received too far ahead of its own clock."""

    events: int
    newest_hlc: int

    def plus(self, other: ClockAhead | None) -> ClockAhead:
        if other is None:
            return self
        return ClockAhead(self.events + other.events, max(self.newest_hlc, other.newest_hlc))


@dataclass
class IngestResult:
    """What happened to a batch of remote events."""

    stored: list[RawEvent] = field(default_factory=list)  # accepted, with their stored bytes
    # per origin, its accepted events too far ahead of our clock (flagged)
    clock_ahead: dict[str, ClockAhead] = field(default_factory=dict)
    duplicates: int = 0
    held: int = 0
    too_far: int = 0  # past the head by more than MAX_HELD_AHEAD: dropped, pulled later
    rejected: list[TillmeshError] = field(default_factory=list)

    @property
    def accepted(self) -> list[Event]:
        return [s.event for s in self.stored]


@dataclass
class Transaction:
    conn: sqlite3.Connection
    heads: dict[str, Head]  # committed heads; read-only here
    fold: StateFold
    clock: HybridClock
    in_scope: Callable[[str], bool]
    pending_origins: set[str]
    wall_ms: Callable[[], int]
    signer: Signer | None = None  # signs the local events (None: unsigned, as in old logs)
    verifier: Verifier | None = None  # tells a signed twin (equivocation) from a forged one
    revoked: dict[str, int] = field(default_factory=dict)  # origin -> last seq it wrote
    newly_revoked: dict[str, int] = field(default_factory=dict)
    needs_rebuild: bool = False  # a revocation or rotation reached events already folded
    stale_marked: bool = False  # ... or events compaction folded into the snapshot
    rotations: Rotations = field(default_factory=dict)  # learned from HQ's key.rotated
    rotated: list[tuple[str, int]] = field(default_factory=list)  # held events to recheck
    keys_changed: bool = False
    checkpoints: dict[str, int] = field(default_factory=dict)  # origin -> its log.signed seq
    released: IngestResult = field(default_factory=lambda: IngestResult())
    staged: dict[str, Head] = field(default_factory=dict)
    accepted: list[Accepted] = field(default_factory=list)
    rows: list[segments.EventRow] = field(default_factory=list)
    new_hashes: dict[tuple[str, int], bytes] = field(default_factory=dict)
    quarantined: list[tuple[int, str, str, int, str, str, bytes]] = field(default_factory=list)
    drained: list[tuple[str, int]] = field(default_factory=list)
    next_held: dict[str, int] = field(default_factory=dict)  # see _next_held

    def head(self, origin: str) -> Head:
        return self.staged.get(origin) or self.heads.get(origin, NO_HEAD)

    # --- local -------------------------------------------------------------------

    def append_local(self, origin: str, body: Body, event_type: str, data: bytes) -> RawEvent:
        seq, prev = self.head(origin)
        ev = Event(origin, seq + 1, self.clock.now(), body.min_schema(), event_type, data, prev)
        h = event_hash(ev)  # the signature is over the hash, which leaves `sig` out
        if self.signer is not None:
            ev = msgspec.structs.replace(ev, sig=self.signer.sign(h))
        raw = encode_event(ev)
        self.accept(ev, h, raw, body, 0)
        return RawEvent(ev, raw)

    # --- remote ------------------------------------------------------------------

    def ingest(self, events: Iterable[CheckedEvent], peer: str, result: IngestResult) -> None:
        for checked in events:
            if len(result.rejected) >= MAX_REFUSED_PER_REQUEST:
                # A frame this bad is hostile: the rest is not worth the group commit's
                # time, which every queued sale waits for. Honest peers send it again.
                result.rejected.append(
                    OversizedError(
                        "refused events in one frame", len(result.rejected), MAX_REFUSED_PER_REQUEST
                    )
                )
                break
            try:
                self._ingest_one(checked, peer, result)
            except (EventError, ChainBroken, Equivocation) as e:
                # Without its traceback: the frames would hold this Transaction and the
                # CheckedEvent that holds `e` (untracked, gc=False): a cycle never freed.
                result.rejected.append(e.with_traceback(None))

    def _ingest_one(self, checked: CheckedEvent, peer: str, result: IngestResult) -> None:
        ev = checked.event
        origin = ev.origin
        if not self.in_scope(origin):
            self.quarantine(ev, peer, OutOfScope(origin, "this replica"))
        seq, head_hash = self.staged.get(origin) or self.heads.get(origin, NO_HEAD)
        if isinstance(checked.error, UnknownKey) and ev.seq > seq:
            checked = recheck(checked, self.verifier)  # a rotation committed since it was checked
            if isinstance(checked.error, UnknownKey):
                self.hold(checked, seq, table="unverified")
                result.held += 1
                return
        if checked.unsigned and not self._trusts_unsigned(origin):  # checkpointed since
            why = "unsigned, past its origin's log.signed checkpoint"
            self.quarantine(ev, peer, SignatureError(origin, ev.seq, why))
        if place_remote(self, checked, peer, result, seq, head_hash) and (
            # Not while a rotation or checkpoint of this commit waits to check the held
            # events again (`release_unverified`): they were checked with the old keys.
            origin in self.pending_origins
            and self._next_held(origin) <= ev.seq + 1
            and all(o != origin for o, _ in self.rotated)
        ):
            self._drain_pending(origin, peer, result)

    def duplicate(self, ev: Event, h: bytes, peer: str) -> None:
        stored = self.new_hashes.get((ev.origin, ev.seq))
        if stored is None:
            stored = segments.hash_at(self.conn, ev.origin, ev.seq)  # None: compacted away
        if stored is not None and stored != h:
            if self.verifier is not None:  # a twin is proof only if its origin signed it
                try:
                    self.verifier.verify(ev, h)
                except SignatureError as e:
                    self.quarantine(ev, peer, e.with_traceback(None))
            self.quarantine(ev, peer, Equivocation(ev.origin, ev.seq, stored, h))

    def hold(self, checked: CheckedEvent, head_seq: int, table: str = "pending") -> None:
        """Keep an event for later: in `pending` until the gap below it fills, or in
        `unverified` until HQ's rotation names the key that signed it (core.rotation)."""
        ev = checked.event
        if ev.seq - head_seq > MAX_HELD_AHEAD:
            raise OversizedError(f"gap before {ev.id}", ev.seq - head_seq, MAX_HELD_AHEAD)
        self.conn.execute(
            f"INSERT OR IGNORE INTO {table} VALUES (?,?,?,?)",
            (ev.origin, ev.seq, checked.hash, checked.raw),
        )
        if table == "pending":
            self.pending_origins.add(ev.origin)
            self.next_held.pop(ev.origin, None)

    def _next_held(self, origin: str) -> int:
        """The lowest seq of `origin` held above its head, once per transaction (and again
        after a hold, drain or eviction): a catch-up behind events pushed far ahead (a
        till selling while another catches up from it) probes `pending` per frame, not
        twice per event (measured: most of a catch-up's writer time in those probes)."""
        found = self.next_held.get(origin)
        if found is None:
            row = self.conn.execute(
                "SELECT min(seq) FROM pending WHERE origin=? AND seq>?",
                (origin, self.head(origin)[0]),
            ).fetchone()
            found = self.next_held[origin] = MAX_INT64 if row[0] is None else int(row[0])
        return found

    def _drain_pending(self, origin: str, peer: str, result: IngestResult) -> None:
        self.next_held.pop(origin, None)  # asked again once this drain has moved the head
        while True:
            seq, head_hash = self.head(origin)
            row = self.conn.execute(
                "SELECT raw FROM pending WHERE origin=? AND seq=?", (origin, seq + 1)
            ).fetchone()
            if row is None:
                self._forget_if_drained(origin)
                break
            self.drained.append((origin, seq + 1))
            checked = check_event(decode_event(row[0]))
            try:
                self._accept_held(checked, head_hash, result)
            except (EventError, ChainBroken) as e:
                # Whoever sent the held row is unknown now, and it is not `peer` (which
                # filled the gap): kept as evidence under HELD_PEER, the drain stops here.
                del e  # its quarantine row is the record
                self._forget_if_drained(origin)
                break
            if any(o == origin for o, _ in self.rotated):
                # It was the origin's log.signed checkpoint: those held above it were
                # taken on its unsigned history's trust, so they are checked again, now
                # signed or refused (`release_unverified`), never drained unchecked.
                break

    def _accept_held(self, checked: CheckedEvent, head_hash: bytes, result: IngestResult) -> None:
        ev = checked.event
        if ev.prev != head_hash:
            self.quarantine(ev, HELD_PEER, ChainBroken(ev.origin, ev.seq, head_hash, ev.prev))
        accept_remote(self, checked, HELD_PEER, result)

    def _forget_if_drained(self, origin: str) -> None:
        # Held rows at or below the head are drained (deleted at write()); one indexed
        # probe above the head says whether anything still waits, however much is held.
        above = self.conn.execute(
            "SELECT 1 FROM pending WHERE origin=? AND seq>? LIMIT 1", (origin, self.head(origin)[0])
        ).fetchone()
        if above is None:
            self.pending_origins.discard(origin)

    # --- shared ------------------------------------------------------------------

    def accept(self, ev: Event, h: bytes, raw: bytes, body: Body | None, flags: int) -> None:
        origin, seq = ev.origin, ev.seq
        if seq > self._revoked_after(origin):
            flags, body = flags | FLAG_REVOKED, None  # kept and replicated, never state
        elif isinstance(body, KeyRevoked) and origin == HQ:
            cut = min(body.after_seq, self._revoked_after(body.replica))
            self.newly_revoked[body.replica] = cut
        elif isinstance(body, KeyRotated) and origin == HQ:
            self._rotate(body)
        elif isinstance(body, LogSigned) and origin not in self.checkpoints:
            self._checkpoint(origin, seq)
        self.staged[origin] = (seq, h)
        self.new_hashes[(origin, seq)] = h
        self.rows.append((origin, seq, ev.hlc, ev.type, flags, h, raw))  # core.segments
        if body is not None:
            self.accepted.append(Accepted(ev, body, flags))

    def _rotate(self, body: KeyRotated) -> None:
        """Learn HQ's rotation: from now on the new key checks the replica's events at
        or past `from_seq`; what the old key wrote there leaves the chain (evicted), and
        the events held for the new key are checked again before this commit's fold."""
        key, origin = decode_public_key(body.public_key), body.replica
        steps = [s for s in self.rotations.get(origin, []) if s[0] < body.from_seq]
        self.rotations[origin] = [*steps, (body.from_seq, key)]
        self.keys_changed = True
        if isinstance(self.verifier, KeyRegistry):
            self.verifier = self.verifier.rotated(origin, body.from_seq, key)
            self._evict_retired(origin, body.from_seq)
        self.rotated.append((origin, body.from_seq))

    def _trusts_unsigned(self, origin: str) -> bool:
        return not isinstance(self.verifier, KeyRegistry) or self.verifier.trusts_unsigned(origin)

    def _checkpoint(self, origin: str, seq: int) -> None:
        """`origin` signs from its `log.signed` at `seq` on (`core.keys`): its unsigned
        events are refused from now, and those held above it (taken on trust when they
        were checked) are checked again before this commit's fold."""
        self.checkpoints[origin] = seq
        self.keys_changed = True
        if isinstance(self.verifier, KeyRegistry):
            self.verifier = self.verifier.checkpointed(origin)
        self.rotated.append((origin, seq + 1))

    def _evict_retired(self, origin: str, from_seq: int) -> None:
        assert isinstance(self.verifier, KeyRegistry)
        self.next_held.pop(origin, None)  # the head may move back
        head, _ = self.head(origin)
        if head < from_seq:
            return
        staged_raw = {(r[0], r[1]): r[6] for r in self.rows if r[0] == origin}
        base = int(self.conn.execute(
            "SELECT COALESCE(MAX(base), 0) FROM heads WHERE origin=?", (origin,)
        ).fetchone()[0])  # fmt: skip
        keep = retired_suffix(
            Vouchers(self.conn, staged_raw), self.verifier, origin, from_seq, head, base
        )
        if keep <= base:  # no event above the base vouches for those below it
            why = f"signed by a key HQ retired from seq {from_seq}"
            self.stale_marked |= unfoldable(self.conn, origin, from_seq - 1, base, why)
        if keep >= head:
            return
        self.needs_rebuild = self.needs_rebuild or folded_among(self.conn, origin, keep) > 0
        evicted = [*evict_stored(self.conn, origin, keep)]
        evicted += [(seq, raw) for (o, seq), raw in staged_raw.items() if seq > keep]
        self.rows = [r for r in self.rows if r[0] != origin or r[1] <= keep]
        self.accepted = [
            a for a in self.accepted if a.event.origin != origin or a.event.seq <= keep
        ]
        for seq, raw in evicted:
            self.new_hashes.pop((origin, seq), None)
            detail = f"{origin}:{seq}: signed by a key HQ retired from seq {from_seq}"
            self.quarantined.append(
                (self.wall_ms(), HELD_PEER, origin, seq, "SignatureError", detail, raw)
            )
        self.staged[origin] = self._stored_head(origin, keep)

    def _stored_head(self, origin: str, seq: int) -> Head:
        if seq == 0:
            return NO_HEAD
        h = self.new_hashes.get((origin, seq))
        if h is None:
            h = segments.hash_at(self.conn, origin, seq) or b""
        return (seq, h)

    def release_unverified(self) -> None:
        """Check again the events held for an unknown key of each origin HQ rotated in
        this transaction, and those held for a gap past the rotation's seq (checked with
        the old key); what verifies now is applied in it, as if just received."""
        while self.rotated:
            origin, from_seq = self.rotated.pop(0)
            raws = take_unverified(self.conn, origin, from_seq)
            if raws:
                held = [RawEvent(decode_event(raw), raw) for raw in raws]
                checked = check_events(held, {origin: self.head(origin)}, self.verifier)
                self.ingest(checked, HELD_PEER, self.released)

    def _revoked_after(self, origin: str) -> int:
        """The last seq `origin` wrote before HQ revoked it (MAX_INT64: not revoked)."""
        return min(self.newly_revoked.get(origin, MAX_INT64), self.revoked.get(origin, MAX_INT64))

    def _apply_revocations(self) -> None:
        """Flag what revoked origins wrote past their cut: stored before the revocation
        arrived, some may be folded already, and then the state is rebuilt without them,
        so it is the same on every replica whichever arrived first."""
        for origin, cut in self.newly_revoked.items():
            folded = folded_among(self.conn, origin, cut)
            past_cut = [(origin, seq) for seq in segments.seqs(self.conn, origin, cut)]
            segments.set_flags(self.conn, past_cut, add=FLAG_REVOKED)
            self.needs_rebuild = self.needs_rebuild or folded > 0
            before = self.revoked.get(origin, MAX_INT64)  # past it nothing was ever folded
            self.stale_marked |= unfoldable(self.conn, origin, cut, before, "revoked by HQ")
            self.revoked[origin] = cut
        if self.newly_revoked:
            revoked = json.dumps(self.revoked, sort_keys=True)
            self.conn.execute("INSERT OR REPLACE INTO meta VALUES ('revoked', ?)", (revoked,))

    def quarantine(self, ev: Event, peer: str, error: TillmeshError) -> NoReturn:
        """Keep the refused bytes as evidence, then refuse (raise) the event."""
        self.quarantined.append(evidence_row(self.wall_ms(), peer, ev, error))
        raise error

    def quarantine_raw(self, peer: str, raw: bytes, error: DecodeError | OversizedError) -> None:
        """Bytes that are not even an envelope: evidence only."""
        row = (self.wall_ms(), peer, "?", 0, type(error).__name__, str(error), raw[:4096])
        self.quarantined.append(row)

    def write(self) -> None:
        """Fold, then persist rows, heads and evidence; the caller commits."""
        self.release_unverified()
        if self.accepted:
            self.fold.apply(self.conn, self.accepted)
        c = self.conn
        segments.write(c, self.rows)
        c.executemany("DELETE FROM pending WHERE origin=? AND seq=?", self.drained)
        if self.quarantined:
            c.executemany(
                "INSERT INTO quarantine (received_ms, peer, origin, seq, kind, detail, raw)"
                " VALUES (?,?,?,?,?,?,?)",
                self.quarantined,
            )
            trim_quarantine(c, MAX_QUARANTINE_ROWS)
        c.executemany(
            "INSERT INTO heads (origin, seq, hash) VALUES (?,?,?) ON CONFLICT (origin)"
            " DO UPDATE SET seq=excluded.seq, hash=excluded.hash",
            [(o, s, h) for o, (s, h) in self.staged.items()],
        )
        if self.rows:
            c.execute("INSERT OR REPLACE INTO meta VALUES ('hlc', ?)", (self.clock.last,))
        if self.keys_changed:
            c.execute(
                "INSERT OR REPLACE INTO meta VALUES ('keys', ?)", (dump_rotations(self.rotations),)
            )
            checkpoints = json.dumps(self.checkpoints, sort_keys=True)
            c.execute("INSERT OR REPLACE INTO meta VALUES ('checkpoints', ?)", (checkpoints,))
        self._apply_revocations()


class Admitting(Protocol):
    """A batch being decided against the chain heads, whatever keeps it: the SQLite
    log's `Transaction` and HQ's PostgreSQL `Admission` (replicas/hq/admit.py). Each
    decides where an event goes (its chain position, what it holds); `accept_remote`
    is the one rule for what a remote event next in its chain becomes."""

    clock: HybridClock

    def accept(self, ev: Event, h: bytes, raw: bytes, body: Body | None, flags: int) -> None: ...

    def quarantine(self, ev: Event, peer: str, error: TillmeshError) -> NoReturn: ...

    def duplicate(self, ev: Event, h: bytes, peer: str) -> None:
        """One at or below its chain's head: equivocation if its bytes differ."""

    def hold(self, checked: CheckedEvent, head_seq: int) -> None:
        """One past a gap: kept until the events below it arrive."""


def place_remote(
    batch: Admitting, checked: CheckedEvent, peer: str, result: IngestResult,
    seq: int, head_hash: bytes,
) -> bool:  # fmt: skip
    """Decide a checked remote event against its chain's head (`seq`, `head_hash`):
    True if it was accepted (held events above it may follow it now)."""
    ev = checked.event
    if ev.seq == seq + 1 and ev.prev == head_hash:  # the common case, tested first
        accept_remote(batch, checked, peer, result)
        return True
    if ev.seq <= seq:
        batch.duplicate(ev, checked.hash, peer)
        result.duplicates += 1
    elif ev.seq > seq + 1:
        # Never held when refused already (card data, not its origin's writing, a body
        # against the rules): refused now, it is blamed on the peer that sent it, not on
        # whichever honest peer later fills the gap below it.
        if checked.error is not None:
            batch.quarantine(ev, peer, checked.error)
        if ev.seq - seq > MAX_HELD_AHEAD:
            # Left for the pulls to bring in order, not refused: a till pushes each new
            # sale to every peer, also to one catching up a million events behind it,
            # and a refusal would back that honest peer off (a 1M catch-up stalled at
            # 2,000 events, backed off for 7 minutes, before this).
            result.too_far += 1
            return False
        batch.hold(checked, seq)
        result.held += 1
    else:
        batch.quarantine(ev, peer, ChainBroken(ev.origin, ev.seq, head_hash, ev.prev))
    return False


def accept_remote(batch: Admitting, checked: CheckedEvent, peer: str, result: IngestResult) -> None:
    """A remote event next in its chain: refused if its check failed; else stored,
    flagged unapplied when this build cannot read its body (stored and forwarded,
    applied once a build that knows it rebuilds the state), and skewed when its HLC is
    too far ahead of our clock (kept, but it may not drag our clock into the future:
    the flag is this replica's observation, so the fold never reads it)."""
    if checked.known:  # cannot happen while heads only grow; checked in full if it does
        checked = check_event(checked.event)
    ev, body = checked.event, checked.body
    if checked.error is not None:
        batch.quarantine(ev, peer, checked.error)
    flags = 0 if body is not None else FLAG_UNAPPLIED
    if not batch.clock.observe(ev.hlc):
        flags |= FLAG_SKEWED
        seen = ClockAhead(1, ev.hlc)
        result.clock_ahead[ev.origin] = seen.plus(result.clock_ahead.get(ev.origin))
    batch.accept(ev, checked.hash, checked.raw, body, flags)
    result.stored.append(RawEvent(ev, checked.raw))


def evidence_row(
    received_ms: int, peer: str, ev: Event, error: TillmeshError
) -> tuple[int, str, str, int, str, str, bytes]:
    """A quarantine row: the refused bytes as evidence, but card data never enters the
    log, not even as evidence (origin, seq and why only, whatever else is wrong with the
    event); an out-of-range seq is evidence, not a crash."""
    raw = b"" if holds_card_data(ev, error) else encode_event(ev)
    seq = min(ev.seq, MAX_INT64)
    return (received_ms, peer, ev.origin, seq, type(error).__name__, str(error), raw)


def trim_quarantine(conn: sqlite3.Connection, max_rows: int) -> int:
    """Past `max_rows` rows of evidence, drop the oldest down to 90%; returns how many.

    Ids only grow and only a prefix is ever deleted, so the rows are the ids min..max:
    the check is two index lookups and the delete a range, whatever the table holds.
    """
    lo, hi = conn.execute("SELECT min(id), max(id) FROM quarantine").fetchone()
    if hi is None or hi - lo + 1 <= max_rows:
        return 0
    keep_from = hi - max_rows * 9 // 10 + 1
    dropped = conn.execute("DELETE FROM quarantine WHERE id < ?", (keep_from,)).rowcount
    conn.execute(
        "INSERT INTO meta VALUES ('quarantine_dropped', ?) ON CONFLICT (key)"
        " DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
        (dropped,),
    )
    return dropped
