"""Each checked event's fate against the chain heads, for HQ's PostgreSQL store.

The same rules as the SQLite log's `core.batch.Transaction` (accept the next event of a
chain, count a duplicate, hold one past a gap, quarantine a broken chain or one out of
scope): one rule for both, `core.batch.place_remote` (where an event goes against its
chain's head, and what one next in its chain becomes: `accept_remote`) and
`evidence_row`, each store keeping what it decides its own way. Decided in memory: the
reads it needs (held events to drain, stored hashes of duplicates) are handed in by the
caller, who batches them into a query each. A gap wider than `MAX_HELD_AHEAD` is left
for the pulls (`too_far`), as on SQLite, not refused. The checks that need no log
(canonical bytes, body, card data, signature) were done by `core.checks.check_events`
before; nothing reaches PostgreSQL unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

from core.batch import (
    MAX_HELD_AHEAD,
    MAX_REFUSED_PER_REQUEST,
    IngestResult,
    accept_remote,
    evidence_row,
    place_remote,
)
from core.checks import NO_HEAD, CheckedEvent, Head, check_event, recheck
from core.clock import HybridClock
from core.errors import (
    ChainBroken,
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
)
from core.fold import FLAG_REVOKED
from core.keys import KeyRegistry
from core.rotation import Rotations
from core.signing import Verifier, decode_public_key

__all__ = ["Admission", "EventRow", "QuarantineRow"]

# (store, origin, seq, hlc, type, flags, hash, raw): hq_events' columns
EventRow = tuple[str, str, int, int, str, int, bytes, bytes]
# (received_ms, peer, origin, seq, kind, detail, raw)
QuarantineRow = tuple[int, str, str, int, str, str, bytes]


def _store(origin: str) -> str:
    return origin.partition("/")[0]


@dataclass
class Admission:
    """One batch's decisions; `staged` heads are published only after COMMIT."""

    heads: dict[str, Head]
    in_scope: Callable[[str], bool]
    clock: HybridClock
    wall_ms: Callable[[], int]
    revoked: dict[str, int]
    verifier: Verifier | None = None
    staged: dict[str, Head] = field(default_factory=dict)
    last_hlc: dict[str, int] = field(default_factory=dict)
    rows: list[EventRow] = field(default_factory=list)
    applied: list[tuple[Event, Body]] = field(default_factory=list)
    held: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)
    drained: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[Event, bytes, str]] = field(default_factory=list)
    quarantined: list[QuarantineRow] = field(default_factory=list)
    newly_revoked: dict[str, int] = field(default_factory=dict)
    new_hashes: dict[tuple[str, int], bytes] = field(default_factory=dict)
    # key rotations (`core.rotation`): HQ's as known, those learned in this batch, the
    # events held for a key not known yet, and those a rotation released (no request's)
    rotations: Rotations = field(default_factory=dict)
    rotated: list[tuple[str, int]] = field(default_factory=list)
    unverified: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)
    released: IngestResult = field(default_factory=IngestResult)
    catalog_stale: bool = False  # events left the chain: every SKU's product is recomputed
    holding: set[str] = field(default_factory=set)  # origins with events held after a gap
    # `log.signed` checkpoints (`core.keys`): origin -> its seq, as known and learned
    # here, and (origin, seq + 1) of each learned in this batch: its held events above
    # it, checked on an unsigned history's trust, are checked again (`rotation.py`)
    checkpoints: dict[str, int] = field(default_factory=dict)
    checkpointed: list[tuple[str, int]] = field(default_factory=list)

    def head(self, origin: str) -> Head:
        return self.staged.get(origin) or self.heads.get(origin, NO_HEAD)

    # --- remote --------------------------------------------------------------------

    def ingest(
        self,
        checked: list[CheckedEvent],
        peer: str,
        result: IngestResult,
        pending: Callable[[str, int], list[bytes]],
    ) -> None:
        """`pending(origin, above)`: raws held for `origin` past seq `above`, in seq order.
        As the SQLite log, the events held next in a chain follow the event that fills
        the gap at once, before the frame's next event (which may be their twin)."""
        for c in checked:
            if len(result.rejected) >= MAX_REFUSED_PER_REQUEST:
                n = len(result.rejected)
                refusal = OversizedError("refused events in one frame", n, MAX_REFUSED_PER_REQUEST)
                result.rejected.append(refusal)
                break
            try:
                if self._one(c, peer, result) and c.event.origin in self.holding:
                    self._drain(c.event.origin, self._held(c.event.origin, pending), result)
            except (EventError, ChainBroken, Equivocation) as e:
                result.rejected.append(e.with_traceback(None))

    def _held(self, origin: str, pending: Callable[[str, int], list[bytes]]) -> list[bytes]:
        """`origin`'s raws held past its head, in seq order: in this batch too, as the
        SQLite log's `pending` table has them at once; of two at one seq, the first held."""
        above = self.head(origin)[0]
        raws = {decode_event(raw).seq: raw for raw in pending(origin, above)}
        for o, seq, _, raw in self.held:
            if o == origin and seq > above:
                raws.setdefault(seq, raw)
        return [raws[seq] for seq in sorted(raws)]

    def _checkpointed_now(self, origin: str) -> bool:
        return any(o == origin for o, _ in self.checkpointed)

    def _one(self, checked: CheckedEvent, peer: str, result: IngestResult) -> bool:
        """Decide one event; True if it advanced a chain (held events may follow it)."""
        ev = checked.event
        if not self.in_scope(ev.origin):
            self.quarantine(ev, peer, OutOfScope(ev.origin, "this HQ worker"))
        seq, head_hash = self.head(ev.origin)
        if isinstance(checked.error, UnknownKey) and ev.seq > seq:
            checked = recheck(checked, self.verifier)  # a rotation learned since it was checked
            if isinstance(checked.error, UnknownKey):  # held until HQ's rotation names it
                if ev.seq - seq > MAX_HELD_AHEAD:
                    raise OversizedError(f"gap before {ev.id}", ev.seq - seq, MAX_HELD_AHEAD)
                self.unverified.append((ev.origin, ev.seq, checked.hash, checked.raw))
                result.held += 1
                return False
        if checked.unsigned and not self._trusts_unsigned(ev.origin):  # checkpointed since
            why = "unsigned, past its origin's log.signed checkpoint"
            self.quarantine(ev, peer, SignatureError(ev.origin, ev.seq, why))
        return place_remote(self, checked, peer, result, seq, head_hash)

    def _trusts_unsigned(self, origin: str) -> bool:
        return not isinstance(self.verifier, KeyRegistry) or self.verifier.trusts_unsigned(origin)

    def duplicate(self, ev: Event, h: bytes, peer: str) -> None:
        self.duplicates.append((ev, h, peer))  # compared with the stored bytes after

    def hold(self, checked: CheckedEvent, head_seq: int) -> None:
        ev = checked.event
        self.held.append((ev.origin, ev.seq, checked.hash, checked.raw))
        self.holding.add(ev.origin)

    def _drain(self, origin: str, raws: list[bytes], result: IngestResult) -> None:
        """Accept the held events next in `origin`'s chain, until one is missing or its
        checkpoint is taken (as the SQLite log's drain): those above a checkpoint were
        held on trust and are checked again, signed or refused (`rotation.py`)."""
        for raw in raws:
            if self._checkpointed_now(origin):
                return
            seq, head_hash = self.head(origin)
            c = check_event(RawEvent(decode_event(raw), raw))
            if c.event.seq != seq + 1:
                return
            self.drained.append((origin, seq + 1))
            try:
                if c.event.prev != head_hash:
                    broken = ChainBroken(origin, c.event.seq, head_hash, c.event.prev)
                    self.quarantine(c.event, "(held)", broken)
                accept_remote(self, c, "(held)", result)
            except (EventError, ChainBroken):
                return

    # --- shared --------------------------------------------------------------------

    def accept(self, ev: Event, h: bytes, raw: bytes, body: Body | None, flags: int) -> None:
        origin, seq = ev.origin, ev.seq
        cut = min(self.newly_revoked.get(origin, MAX_INT64), self.revoked.get(origin, MAX_INT64))
        if seq > cut:
            flags, body = flags | FLAG_REVOKED, None  # kept and replicated, never state
        elif isinstance(body, KeyRevoked) and origin == HQ:
            old = min(self.newly_revoked.get(body.replica, MAX_INT64),
                      self.revoked.get(body.replica, MAX_INT64))  # fmt: skip
            self.newly_revoked[body.replica] = min(body.after_seq, old)
        elif isinstance(body, KeyRotated) and origin == HQ:
            self._rotate(body)
        elif isinstance(body, LogSigned) and origin not in self.checkpoints:
            self._checkpoint(origin, seq)
        self.staged[origin] = (seq, h)
        self.last_hlc[origin] = ev.hlc
        self.new_hashes[(origin, seq)] = h
        self.rows.append((_store(origin), origin, seq, ev.hlc, ev.type, flags, h, raw))
        if body is not None:
            self.applied.append((ev, body))

    def _rotate(self, body: KeyRotated) -> None:
        """Learn HQ's rotation, as the SQLite log's `Transaction._rotate`: the new key
        checks the replica's events from `from_seq` on; the store evicts what the old key
        wrote there and checks the held events again (`rotation.py`)."""
        key, origin = decode_public_key(body.public_key), body.replica
        steps = [s for s in self.rotations.get(origin, []) if s[0] < body.from_seq]
        self.rotations[origin] = [*steps, (body.from_seq, key)]
        if isinstance(self.verifier, KeyRegistry):
            self.verifier = self.verifier.rotated(origin, body.from_seq, key)
        self.rotated.append((origin, body.from_seq))

    def _checkpoint(self, origin: str, seq: int) -> None:
        """As the SQLite log's `Transaction._checkpoint`: `origin` signs from its
        `log.signed` at `seq` on, so its unsigned events are refused from now."""
        self.checkpoints[origin] = seq
        if isinstance(self.verifier, KeyRegistry):
            self.verifier = self.verifier.checkpointed(origin)
        self.checkpointed.append((origin, seq + 1))

    def check_duplicates(self, stored: dict[tuple[str, int], bytes]) -> list[TillmeshError]:
        """Quarantine each duplicate whose bytes differ from the stored event's (a signed
        twin is equivocation); `stored`: hashes read for `self.duplicates`."""
        refused: list[TillmeshError] = []
        for ev, h, peer in self.duplicates:
            known = self.new_hashes.get((ev.origin, ev.seq)) or stored.get((ev.origin, ev.seq))
            if known is None or known == h:
                continue
            try:
                if self.verifier is not None:
                    try:
                        self.verifier.verify(ev, h)
                    except SignatureError as e:
                        self.quarantine(ev, peer, e.with_traceback(None))
                self.quarantine(ev, peer, Equivocation(ev.origin, ev.seq, known, h))
            except (EventError, Equivocation) as e:
                refused.append(e.with_traceback(None))
        return refused

    def quarantine(self, ev: Event, peer: str, error: TillmeshError) -> NoReturn:
        """Keep the refused bytes as evidence (never card data), then raise."""
        self.quarantined.append(evidence_row(self.wall_ms(), peer, ev, error))
        raise error
