"""What can be known of a remote event without the log, checked before the group commit:
its hash, its canonical bytes, its typed and validated body, and whether a signature of
its origin covers it (`check_events`). Run outside the writer's thread, so a group
commit (which every queued sale waits for) holds only the work that needs the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec

from core.errors import (
    CardNumberInText,
    DecodeError,
    EventError,
    NonCanonicalEncoding,
    SignatureError,
    TillmeshError,
    UnknownEventType,
    WrongAuthor,
)
from core.events import (
    CARD_OUTCOME_TYPES,
    HQ,
    HQ_ONLY_TYPES,
    Body,
    Event,
    RawEvent,
    check_envelope,
    decode_body,
    encode_event,
    event_hash,
    parse_payment_id,
    store_of,
)
from core.signing import Verifier, vouch

__all__ = [
    "CHECK_SLICE",
    "NO_HEAD",
    "CheckedEvent",
    "Head",
    "check_event",
    "check_events",
    "check_events_in_turns",
    "holds_card_data",
    "recheck",
]

# Events checked per turn of the event loop before `EventLog.ingest` queues them: ~1-2
# ms of Python, so a big frame neither blocks other tasks (a sale, an API call) for long
# nor waits for a turn of its own per event. Also the run whose newest signature is kept
# (`_check_signatures`): a log that checks signatures keeps one at least per this many
# events of an origin, so a slice is checked alike wherever it is (core.worker_checks).
CHECK_SLICE = 256
Head = tuple[int, bytes]  # (seq, hash) of an origin's newest contiguous event
NO_HEAD: Head = (0, b"")


class CheckedEvent(msgspec.Struct, frozen=True, gc=False):
    """A remote event with everything that depends on it alone, not on the log.

    `body` is None when the type or schema is unknown to this build (stored and
    forwarded, not applied) or when the body is invalid (`error`: quarantined if the
    event's chain position is right, like any refused event).
    """

    event: Event
    hash: bytes
    raw: bytes  # canonical envelope bytes, as stored and served
    body: Body | None
    error: EventError | None = None
    known: bool = False  # at or below the head when checked: hash only, body unchecked
    unsigned: bool = False  # taken on an unsigned history's trust (core.keys), not signed


def check_event(item: Event | RawEvent) -> CheckedEvent:
    """Hash, canonical bytes and typed body of one event. Given the bytes it came as,
    they are what is stored, once they are the canonical encoding (else refused, so two
    replicas never hold different bytes for one event)."""
    ev, raw = (item.event, item.raw) if isinstance(item, RawEvent) else (item, None)
    if raw is None:  # bytes were checked as they were decoded; objects are checked here
        try:
            check_envelope(ev)
        except DecodeError as e:
            return CheckedEvent(ev, b"", b"", None, e.with_traceback(None))
    canonical = encode_event(ev)
    refused: EventError | None = None
    if raw is not None and raw != canonical:
        refused = NonCanonicalEncoding(ev.origin, ev.seq)
    elif ev.type in HQ_ONLY_TYPES and ev.origin != HQ:
        refused = WrongAuthor(ev.origin, ev.seq, ev.type, HQ)
    if refused is not None:
        return CheckedEvent(ev, event_hash(ev), canonical, None, refused)
    try:
        body: Body | None = decode_body(ev)
        error = None
    except UnknownEventType:
        body, error = None, None
    except EventError as e:  # no traceback: it would pin frames for as long as it is kept
        body, error = None, e.with_traceback(None)
    if body is not None and ev.type in CARD_OUTCOME_TYPES and (wrong := _foreign_outcome(ev, body)):
        return CheckedEvent(ev, event_hash(ev), canonical, None, wrong)
    return CheckedEvent(ev, event_hash(ev), canonical, body, error)


def _foreign_outcome(ev: Event, body: Body) -> WrongAuthor | None:
    """A card payment's outcome is written by a replica of the payment's store (it holds
    the sale and forwards it): from any other origin it is refused, as the API would."""
    sale, _ = parse_payment_id(getattr(body, "payment", "#0"))
    store = store_of(sale.partition(":")[0])
    if store is not None and store_of(ev.origin) == store:
        return None
    return WrongAuthor(ev.origin, ev.seq, ev.type, f"a replica of store {store}")


def holds_card_data(ev: Event, error: TillmeshError) -> bool:
    if isinstance(error, CardNumberInText):
        return True
    try:
        decode_body(ev)
    except CardNumberInText:
        return True
    except TillmeshError:
        return False
    return False


def check_events(
    events: Sequence[Event | RawEvent], heads: dict[str, Head], verifier: Verifier | None = None
) -> list[CheckedEvent]:
    """Check each event; one at or below its origin's committed head is a duplicate
    (or equivocation) whatever happens meanwhile, since heads only grow: only its
    hash is needed, so its body is not decoded (echoes and overlapping pulls).
    With a `verifier`, the new events' signatures too (`core.signing.vouch`): one
    no signature covers carries its SignatureError and is refused, never applied."""
    out: list[CheckedEvent] = []
    for item in events:
        ev = item.event if isinstance(item, RawEvent) else item
        if ev.seq <= heads.get(ev.origin, NO_HEAD)[0]:
            out.append(CheckedEvent(ev, event_hash(ev), b"", None, known=True))
        else:
            out.append(check_event(item))
    if verifier is not None:
        _check_signatures(out, verifier)
    return out


async def check_events_in_turns(
    events: Sequence[Event | RawEvent], heads: dict[str, Head], verifier: Verifier | None = None
) -> list[CheckedEvent]:
    """`check_events`, CHECK_SLICE events per turn of the event loop: a big frame does
    not hold up the other tasks (a sale, an API call) while it is checked."""
    checked: list[CheckedEvent] = []
    for i in range(0, len(events), CHECK_SLICE):
        if i:
            await asyncio.sleep(0)
        checked += check_events(events[i : i + CHECK_SLICE], heads, verifier)
    return checked


def recheck(checked: CheckedEvent, verifier: Verifier | None) -> CheckedEvent:
    """An event held for an unknown key, checked again once a rotation names it: its own
    signature, then the rest of `check_event` (SQLite's log and HQ's PostgreSQL store)."""
    if verifier is None:
        return checked
    try:
        verifier.verify(checked.event, checked.hash)
    except SignatureError as e:
        return msgspec.structs.replace(checked, error=e.with_traceback(None))
    return check_event(RawEvent(checked.event, checked.raw))


def _check_signatures(checked: list[CheckedEvent], verifier: Verifier) -> None:
    """Mark, in place, each new event no valid signature of its origin covers; strip the
    unchecked signature bytes of each one the chain covers, so what the log stores and
    serves as signed is what it verified (a peer cannot plant bogus bytes that would
    make an honest relay's frames fail everywhere)."""
    by_origin: dict[str, list[int]] = {}
    for i, c in enumerate(checked):
        if not c.known and not isinstance(c.error, NonCanonicalEncoding | DecodeError):
            by_origin.setdefault(c.event.origin, []).append(i)
    for indexes in by_origin.values():
        found = vouch([(checked[i].event, checked[i].hash) for i in indexes], verifier)
        for k, error in found.refused.items():
            c = checked[indexes[k]]
            checked[indexes[k]] = CheckedEvent(c.event, c.hash, c.raw, None, error)
        for k in found.trusted:
            checked[indexes[k]] = msgspec.structs.replace(checked[indexes[k]], unsigned=True)
        for k in found.covered:
            c = checked[indexes[k]]
            if c.event.sig:
                bare = msgspec.structs.replace(c.event, sig=b"")
                checked[indexes[k]] = msgspec.structs.replace(c, event=bare, raw=encode_event(bare))
