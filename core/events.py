"""Events: the envelope and the canonical msgpack encoding of it and of the typed bodies
(`core.bodies`, whose names this module re-exports).

An `Event` is the unit of replication. Its envelope is understood by every version
of tillmesh; its `body` is the canonical msgpack of a typed body struct chosen by
`type`. Keeping the body as bytes lets a replica store and forward an event whose
type or schema version it does not know (written by a newer till) without
understanding it, and lets the hash chain cover exact bytes.

Canonical encoding: msgspec encodes a Struct's fields in declaration order, ints
in their shortest form and never floats here, so the same event gives the same
bytes everywhere. A body that decodes but re-encodes to other bytes is refused
(`NonCanonicalEncoding`), so two replicas can never hold different bytes for one
event without that being equivocation.

Money is always integer minor units. Card data never enters an event: a card
payment carries a processor token and the last four digits only, and a token that
looks like a card number is refused.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import msgspec
import msgspec.inspect
from msgspec import Struct

from core.bodies import (
    BODY_TYPES,
    CARD_OUTCOME_TYPES,
    HQ_ONLY_TYPES,
    Body,
    CardCaptured,
    CardDeclined,
    CardExpired,
    CardLimitsSet,
    ConflictResolved,
    KeyRevoked,
    KeyRotated,
    LogSigned,
    Payment,
    PaymentId,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    ResolvedMove,
    SaleCompleted,
    SaleLine,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
    by_schema,
    check_sku,
    parse_payment_id,
    payment_id,
)
from core.errors import (
    CardNumberInText,
    DecodeError,
    NonCanonicalEncoding,
    OversizedError,
    SchemaViolation,
    TillmeshError,
    UnknownEventType,
)
from core.pan import contains_card_number, control_character, could_hold_either

__all__ = [
    "BODY_TYPES",
    "CARD_OUTCOME_TYPES",
    "HQ",
    "HQ_ONLY_TYPES",
    "MAX_EVENT_BYTES",
    "MAX_INT64",
    "SCHEMA_VERSION",
    "Body",
    "CardCaptured",
    "CardDeclined",
    "CardExpired",
    "CardLimitsSet",
    "ConflictResolved",
    "Event",
    "KeyRevoked",
    "KeyRotated",
    "LogSigned",
    "Payment",
    "PaymentId",
    "PriceSet",
    "ProductUpserted",
    "RawEvent",
    "RefundIssued",
    "RefundLine",
    "ResolvedMove",
    "SaleCompleted",
    "SaleLine",
    "SaleVoided",
    "ShiftClosed",
    "ShiftOpened",
    "StockAdjusted",
    "StockCounted",
    "StockReceived",
    "by_schema",
    "check_envelope",
    "check_sku",
    "decode_body",
    "decode_checked_body",
    "decode_event",
    "decode_events",
    "decode_raws",
    "encode_body",
    "encode_event",
    "encode_events",
    "event_hash",
    "event_id",
    "parse_event_id",
    "parse_payment_id",
    "payment_id",
    "store_of",
]

# The newest schema this build reads and writes. An event is written with the lowest
# schema its body needs (`Body.min_schema`): an older build stores and forwards what it
# cannot read, so only the events that use a newer field wait for its upgrade.
# 2: sale.completed's approved_by / approval_reason (a manager's price override).
# 3: `by` (who made it) on the events that named no one: void, refund, stock moves,
#    catalog writes, shift close (`by_schema`).
# 4: conflict.resolved's `supersede` action and `supersedes` (a catalog override).
# 5: conflict.resolved's effects (`sku`, `count`, `moves`): one resolution per conflict
#    is effective, and the fold applies its effects only.
# 6: tax computed at the sale: sale.completed's tax_mode, its lines' tax_rate_bp, refund
#    lines' tax.
# 7: a card payment's `approval` / `override_by`; conflict.resolved's actions for a
#    declined card (paid_other_way, written_off, refund_reversed).
# 8: a deferred card payment's `attempt`: the key of an authorisation that got no answer.
SCHEMA_VERSION = 8
HQ = "hq"
MAX_EVENT_BYTES = 64 * 1024
HASH_BYTES = 32


class Event(Struct, array_like=True, frozen=True, gc=False):
    """The envelope. `prev` is the hash of the origin's previous event (empty at seq 1)."""

    origin: str
    seq: int
    hlc: int
    schema: int
    type: str
    body: bytes
    prev: bytes
    sig: bytes = b""  # room for a signature over event_hash(); unused in schema 1

    @property
    def id(self) -> str:
        return event_id(self.origin, self.seq)


# --- encoding ---------------------------------------------------------------------------

_encoder = msgspec.msgpack.Encoder()
_event_decoder = msgspec.msgpack.Decoder(Event)
_events_decoder = msgspec.msgpack.Decoder(list[Event])
_body_decoders = {t: msgspec.msgpack.Decoder(cls) for t, cls in BODY_TYPES.items()}


def event_id(origin: str, seq: int) -> str:
    return f"{origin}:{seq}"


def parse_event_id(eid: str) -> tuple[str, int]:
    origin, _, seq = eid.rpartition(":")
    return origin, int(seq)


def store_of(origin: str) -> str | None:
    """`s1/t2` -> `s1`; HQ belongs to no store."""
    return None if origin == HQ else origin.partition("/")[0]


class RawEvent(NamedTuple):
    """An event beside its envelope bytes: as received (sync carries both, so nothing
    is decoded or encoded twice) or as stored (what the log tells its listeners)."""

    event: Event
    raw: bytes


def encode_event(ev: Event) -> bytes:
    return _encoder.encode(ev)


def encode_events(events: list[Event]) -> bytes:
    return _encoder.encode(events)


def event_hash(ev: Event) -> bytes:
    """Hash of everything but the signature: what `prev` of the next event names."""
    unsigned = (ev.origin, ev.seq, ev.hlc, ev.schema, ev.type, ev.body, ev.prev)
    return hashlib.blake2b(_encoder.encode(unsigned), digest_size=HASH_BYTES).digest()


def decode_event(data: bytes, max_bytes: int = MAX_EVENT_BYTES) -> Event:
    """Bytes -> envelope, checking size and shape; the body is left undecoded."""
    if len(data) > max_bytes:
        raise OversizedError("event", len(data), max_bytes)
    try:
        ev = _event_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise DecodeError(str(e)) from e
    check_envelope(ev)
    return ev


def decode_raws(raws: Sequence[bytes]) -> tuple[list[RawEvent], list[TillmeshError]]:
    """Envelope bytes -> the events beside their bytes, and the errors of those that
    are no envelope (a log's `ingest_raw` refuses them, and takes the rest)."""
    events: list[RawEvent] = []
    refused: list[TillmeshError] = []
    for raw in raws:
        try:
            events.append(RawEvent(decode_event(raw), raw))
        except TillmeshError as e:
            refused.append(e)
    return events, refused


def decode_events(data: bytes, max_event_bytes: int = MAX_EVENT_BYTES) -> list[Event]:
    """A msgpack array of envelopes (a sync frame body) -> envelopes, each checked."""
    try:
        events = _events_decoder.decode(data)
    except msgspec.DecodeError as e:
        raise DecodeError(str(e)) from e
    for ev in events:
        if len(ev.body) > max_event_bytes:
            raise OversizedError(f"event {ev.id} body", len(ev.body), max_event_bytes)
        check_envelope(ev)
    return events


# SQLite's INTEGER is a signed 64-bit value: a larger seq or HLC would fail a whole group
# commit (OverflowError at the INSERT, every honest sale of that commit with it).
MAX_INT64 = 2**63 - 1


def check_envelope(ev: Event) -> None:
    if not (1 <= ev.seq <= MAX_INT64 and 0 <= ev.hlc <= MAX_INT64 and 1 <= ev.schema <= 2**16):
        raise DecodeError(f"envelope out of range: seq={ev.seq} hlc={ev.hlc} schema={ev.schema}")
    if not ev.origin or len(ev.origin) > 80:
        raise DecodeError(f"bad origin {ev.origin[:80]!r}")
    expected_prev = 0 if ev.seq == 1 else HASH_BYTES
    if len(ev.prev) != expected_prev:
        raise DecodeError(f"{ev.id}: prev hash has {len(ev.prev)} bytes, want {expected_prev}")


def encode_body(body: Body) -> tuple[str, bytes]:
    """Validate a freshly made body and return (type, canonical bytes)."""
    try:  # constructing a Struct does not check Meta constraints; decoding does
        decoded = _body_decoders[body.TYPE].decode(_encoder.encode(body))
    except msgspec.ValidationError as e:
        raise SchemaViolation(body.TYPE, str(e)) from e
    _check(body.TYPE, body)
    # msgspec's omit_defaults compares str defaults by identity: a "cash" read from
    # SQLite is not the default object and would be written out, while every peer's
    # decode -> encode omits it. Encoding the decoded body gives the bytes peers expect.
    return body.TYPE, _encoder.encode(decoded)


def decode_body(ev: Event, *, check_text: bool = True) -> Body:
    """Typed body of an event; `UnknownEventType` for types/schemas newer than this build.
    `check_text=False` skips the card-number and control-character rules: for events
    already stored (a rebuild), which were accepted under the rules of their day."""
    decoder = _body_decoders.get(ev.type)
    if decoder is None or ev.schema > SCHEMA_VERSION:
        raise UnknownEventType(ev.type, ev.schema)
    try:
        body = decoder.decode(ev.body)
    except msgspec.ValidationError as e:
        raise SchemaViolation(ev.type, str(e)) from e
    except msgspec.DecodeError as e:
        raise DecodeError(f"{ev.id} body: {e}") from e
    if _encoder.encode(body) != ev.body:
        raise NonCanonicalEncoding(ev.origin, ev.seq)
    if body.min_schema() > ev.schema:
        raise SchemaViolation(
            ev.type, f"schema-{body.min_schema()} fields in a schema-{ev.schema} event"
        )
    _check(ev.type, body, check_text=check_text)
    return body


def decode_checked_body(ev: Event) -> Body:
    """Typed body of an event `decode_body` already passed (in a checking worker,
    `core.worker_checks`): decoded only, none of its rules run again."""
    return _body_decoders[ev.type].decode(ev.body)


def _check(event_type: str, body: Body, *, check_text: bool = True) -> None:
    if check_text and could_hold_either(_all_texts(body, [])):
        _check_texts(event_type, body)
    try:
        body.check()
    except ValueError as e:
        raise SchemaViolation(event_type, str(e)) from e


def _check_texts(event_type: str, body: Body) -> None:
    """Each text on its own, by field name: the exact rules, and the error names the field."""
    for name, text in _texts(body):
        identifier = name.rsplit(".", 1)[-1] in _IDENTIFIERS
        if contains_card_number(text, identifier=identifier):  # never repeated in the error
            raise CardNumberInText(event_type, f"{name} looks like a full card number")
        if (control := control_character(text)) is not None:
            raise SchemaViolation(event_type, f"{name} holds a control character ({control})")


# Text fields that name something (see core.pan: long numbers are common there).
_IDENTIFIERS = frozenset({"sku", "receipt", "shift", "sale", "conflict", "payment", "attempt"})


def _all_texts(value: Struct, out: list[str]) -> list[str]:
    """Every non-empty text in a body, into `out`: `_texts` without the names (they are
    needed only once a text fails, and building them was most of the cost of checking a
    sale). An empty text can hold nothing either rule refuses, so it is left out."""
    return _text_collector(type(value))(value, out)


_Collector = Callable[[Struct, list[str]], list[str]]


@functools.cache
def _text_collector(cls: type[Struct]) -> _Collector:
    """`_all_texts` for one struct type: its text fields read by one C call
    (`operator.attrgetter`) and their Nones and empty texts dropped by `filter` (1.2 µs
    for a sale against 1.5 walking the fields one by one in Python)."""
    fields = _text_fields(cls)
    plain = [name for name, nested in fields if nested is None]
    texts = [name for name, nested in fields if nested is str]  # lists of texts
    inner = [(name, _text_collector(nested)) for name, nested in fields
             if nested is not None and nested is not str]  # fmt: skip
    many = operator.attrgetter(*plain) if len(plain) > 1 else None
    one = operator.attrgetter(plain[0]) if len(plain) == 1 else None

    def collect(value: Struct, out: list[str]) -> list[str]:
        if many is not None:
            out.extend(filter(None, many(value)))
        elif one is not None and (text := one(value)):
            out.append(text)
        for name, collect_inner in inner:
            item = getattr(value, name)
            if item.__class__ is list:
                for part in item:
                    collect_inner(part, out)
            elif item is not None:
                collect_inner(item, out)
        for name in texts:
            out.extend(filter(None, getattr(value, name)))
        return out

    return collect


def _texts(value: Struct, name: str = "") -> Iterator[tuple[str, str]]:
    """Every text in a body, with its field's name (`lines[2].sku`); the fields to visit
    are worked out once per struct type (`_text_fields`), not found by inspection per
    event: this runs on every event decoded."""
    for field, nested in _text_fields(type(value)):
        item = getattr(value, field)
        path = f"{name}.{field}" if name else field
        if nested is None:
            if isinstance(item, str):
                yield path, item
        elif nested is str:
            for i, text in enumerate(item):
                yield f"{path}[{i}]", text
        elif isinstance(item, list):
            for i, part in enumerate(item):
                yield from _texts(part, f"{path}[{i}]")
        elif item is not None:
            yield from _texts(item, path)


@functools.cache
def _text_fields(cls: type[Struct]) -> tuple[tuple[str, type[Struct] | type[str] | None], ...]:
    """(field, None) for a text field, (field, str) for a list of texts, (field, struct
    type) for a struct or a list of structs; fields holding none of these (numbers,
    bytes) are left out."""
    out: list[tuple[str, type[Struct] | type[str] | None]] = []
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    for f in info.fields:
        kind = _unwrap(f.type)
        if isinstance(kind, msgspec.inspect.StrType):
            out.append((f.name, None))
        elif isinstance(kind, msgspec.inspect.StructType):
            out.append((f.name, kind.cls))
        elif isinstance(kind, msgspec.inspect.ListType):
            item = _unwrap(kind.item_type)
            if isinstance(item, msgspec.inspect.StructType):
                out.append((f.name, item.cls))
            elif isinstance(item, msgspec.inspect.StrType):
                out.append((f.name, str))
    return tuple(out)


def _unwrap(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    """`str | None` -> str; Annotated metadata dropped; a Literal of strings is text."""
    if isinstance(kind, msgspec.inspect.Metadata):
        return _unwrap(kind.type)
    if isinstance(kind, msgspec.inspect.UnionType):
        kinds = [k for k in kind.types if not isinstance(k, msgspec.inspect.NoneType)]
        if len(kinds) == 1:
            return _unwrap(kinds[0])
    if isinstance(kind, msgspec.inspect.LiteralType) and all(
        isinstance(v, str) for v in kind.values
    ):
        return msgspec.inspect.StrType()
    return kind
