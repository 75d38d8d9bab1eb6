"""The sync wire protocol: messages, their msgpack encoding, and frame packing. No I/O.

Three messages travel between replicas over core NATS:

    VersionVectorMsg  "what I hold"            tm.vv.<store>.<till> / tm.vv.hq
    PullRequest       "send me these ranges"   request on tm.pull.<target>.<requester>
    EventsFrame       "here are events"        live push on tm.ev.<...>, or a pull reply

Each is a msgspec Struct in a tagged union encoded as a msgpack array, so the
decoder checks shape and types in one pass and an unknown tag is refused like any
other garbage. Events inside a frame stay as the canonical envelope bytes the log
stores in its `raw` column: a replica forwards exactly the bytes it was given and
the receiving log does all event-level validation.

Everything a peer sends is untrusted: `decode_message` turns oversized, malformed
or inconsistent input into `FrameError(peer, detail)` and never anything else.

The outgoing side of the protocol is a list of `Action`s (`Publish`, `Request`)
that a thin transport executes; `IngestOutcome` and `ServePlan` are what the
transport and the engine (`replicas.sync.engine`) hand each other around the log
calls, and `SyncStatus` is what the engine reports. Scope helpers say which origins
a replica holds and may be sent, derived from the replica id alone so no peer can
claim more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

from core.batch import IngestResult
from core.errors import OversizedError
from core.events import HQ, MAX_EVENT_BYTES, store_of
from core.signing import is_signed
from core.vv import SeqRange
from replicas.errors import FrameError

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "MIN_FRAME_BYTES",
    "Action",
    "EventsFrame",
    "Incident",
    "InflightStatus",
    "IngestOutcome",
    "Message",
    "OriginStatus",
    "PeerStatus",
    "Publish",
    "PullRange",
    "PullRequest",
    "Request",
    "ServePlan",
    "SyncStatus",
    "VersionVectorMsg",
    "build_frames",
    "build_reply",
    "decode_message",
    "encode_message",
    "holds",
    "scope_label",
]

DEFAULT_MAX_FRAME_BYTES = 8 * 1024 * 1024  # nats-server's default max_payload
# A frame must fit at least one maximal event, or a large event could never move.
MIN_FRAME_BYTES = 2 * MAX_EVENT_BYTES
MAX_RANGES = 4096  # per pull request; a real request names one range per origin
MAX_VV_ORIGINS = 100_000  # tills of every store plus HQ, with a wide margin
MAX_SEQ = 2**62

ReplicaName = Annotated[str, Meta(min_length=1, max_length=80)]
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ)]
PositiveSeq = Annotated[int, Meta(ge=1, le=MAX_SEQ)]
PullRange = tuple[ReplicaName, PositiveSeq, PositiveSeq]  # (origin, first, last), inclusive
Positive = Annotated[int, Meta(ge=1, le=MAX_SEQ)]


class VersionVectorMsg(Struct, tag="vv", array_like=True, frozen=True):
    """The sender's version vector. `scope` is "*" (HQ: every origin) or the sender's store."""

    sender: ReplicaName
    vv: Annotated[dict[ReplicaName, Seq], Meta(max_length=MAX_VV_ORIGINS)]
    scope: ReplicaName


class PullRequest(Struct, tag="pull", array_like=True, frozen=True):
    """Ask a peer for inclusive seq ranges; the reply is one `EventsFrame` with `pull=id`."""

    sender: ReplicaName
    id: Positive
    ranges: Annotated[list[PullRange], Meta(max_length=MAX_RANGES)]
    max_events: Positive
    max_bytes: Positive


class EventsFrame(Struct, tag="ev", array_like=True, frozen=True):
    """Canonical envelope bytes. `pull` is the request answered (0: live push);
    `more` says the sender stopped early (size or budget) and has more to give."""

    sender: ReplicaName
    events: list[bytes]
    more: bool = False
    pull: Annotated[int, Meta(ge=0, le=MAX_SEQ)] = 0


Message = VersionVectorMsg | PullRequest | EventsFrame

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode_message(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode_message(payload: bytes, peer: str, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    """Untrusted bytes from `peer` -> a checked message, or `FrameError`.

    `peer` is who the transport knows sent it (from the subject, which NATS
    permissions fence); a message naming another sender is refused.
    """
    if len(payload) > max_bytes:
        raise FrameError(peer, f"oversized: {len(payload)} bytes, limit {max_bytes}")
    try:
        msg: Message = _decoder.decode(payload)
    # DecodeError covers ValidationError (unknown tag, bad field); msgspec lets invalid
    # UTF-8 in a str surface as UnicodeDecodeError, a ValueError.
    except (msgspec.DecodeError, ValueError, RecursionError) as e:
        raise FrameError(peer, f"undecodable: {e}") from e
    if msg.sender != peer:
        raise FrameError(peer, f"claims to be sent by {msg.sender!r}")
    if isinstance(msg, PullRequest):
        _check_ranges(peer, msg.ranges)
    return msg


def _check_ranges(peer: str, ranges: Sequence[PullRange]) -> None:
    for origin, first, last in ranges:
        if first > last:
            raise FrameError(peer, f"empty range {origin} {first}..{last}")


# --- frame packing ---------------------------------------------------------------------


def _bin_cost(raw: bytes) -> int:
    """Bytes one event adds to a frame: its msgpack bin header plus the bytes."""
    n = len(raw)
    return n + (2 if n < 256 else 3 if n < 65536 else 5)


def _frame_base(sender: str) -> int:
    """An empty frame's size, with the largest `pull`, plus the array header's growth."""
    return len(_encoder.encode(EventsFrame(sender, [], True, MAX_SEQ))) + 4


def _pack(sender: str, raws: Sequence[bytes], max_bytes: int) -> list[list[bytes]]:
    """Split `raws`, in order, into groups whose frames stay within `max_bytes`."""
    base = _frame_base(sender)
    groups: list[list[bytes]] = []
    current: list[bytes] = []
    size = base
    for raw in raws:
        cost = _bin_cost(raw)
        if base + cost > max_bytes:
            raise OversizedError("event in a frame", len(raw), max_bytes - base)
        if current and size + cost > max_bytes:
            groups.append(current)
            current, size = [], base
        current.append(raw)
        size += cost
    if current:
        groups.append(current)
    return groups


def build_frames(
    sender: str, raws: Sequence[bytes], max_bytes: int, more: bool = False
) -> list[bytes]:
    """Live push: every raw, in order, in as few frames under `max_bytes` as fit.

    All but the last frame say `more`; the last says `more` as given.
    """
    groups = _pack(sender, raws, max_bytes)
    last = len(groups) - 1
    return [
        encode_message(EventsFrame(sender, group, more or i < last))
        for i, group in enumerate(groups)
    ]


def build_reply(
    sender: str, pull_id: int, raws: Sequence[bytes], max_bytes: int, more: bool
) -> tuple[bytes, int]:
    """A pull reply: the longest prefix of `raws` that fits one frame.

    Returns (payload, events included); a cut prefix sets `more` so the requester
    asks again rather than concluding we lack the rest.
    """
    groups = _pack(sender, raws, max_bytes)
    events = ends_signed(groups[0]) if groups else []
    more = more or len(groups) > 1 or (bool(groups) and len(events) < len(groups[0]))
    return encode_message(EventsFrame(sender, events, more, pull_id)), len(events)


def ends_signed(raws: list[bytes]) -> list[bytes]:
    """`raws` up to its last signed event: the receiver checks a run's newest signature
    and lets the chain vouch for the rest, so a frame ending on an event whose signature
    we did not keep (the chain covered it here) would be refused. Unchanged when nothing
    in it is signed (a log from before signing: the receiver decides)."""
    for end in range(len(raws), 0, -1):
        if is_signed(raws[end - 1]):
            return raws[:end]
    return raws


# --- actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    """Fire-and-forget publish (live push, vv announcement)."""

    subject: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """Send a pull request and feed the reply (or its failure) back, naming `peer`/`pull_id`."""

    subject: str
    payload: bytes
    timeout: float
    peer: str
    pull_id: int


Action = Publish | Request


# --- engine <-> transport: what the transport reports, what the engine asks for -------


@dataclass(frozen=True)
class IngestOutcome:
    """What the log made of a frame, and our vector right after (the engine's only view
    of what actually became durable)."""

    accepted: int
    duplicates: int
    held: int
    rejected: int
    vv: Mapping[str, int]
    detail: str = ""

    @classmethod
    def of(cls, result: IngestResult, vv: Mapping[str, int]) -> IngestOutcome:
        detail = str(result.rejected[0]) if result.rejected else ""
        counts = len(result.accepted), result.duplicates, result.held, len(result.rejected)
        return cls(*counts, vv=dict(vv), detail=detail)


@dataclass(frozen=True)
class ServePlan:
    """Rows to read for a pull reply: `log.read_range(origin, from_seq, limit)` for each
    read, in order, then `SyncEngine.build_reply(plan, raws)`."""

    pull_id: int
    reads: tuple[tuple[str, int, int], ...]
    max_bytes: int
    more: bool


@dataclass(frozen=True)
class Incident:
    peer: str
    kind: str
    count: int
    last_detail: str
    last_at: float


@dataclass(frozen=True)
class PeerStatus:
    vv: dict[str, int]
    age: float  # seconds since its last announcement (inf: never heard)
    backoff: float  # seconds its claims are still ignored for
    announced: dict[str, int] = field(default_factory=dict)  # the most it ever announced


@dataclass(frozen=True)
class InflightStatus:
    peer: str
    pull_id: int
    ranges: tuple[SeqRange, ...]
    age: float


@dataclass(frozen=True)
class OriginStatus:
    """One origin (a till, or HQ) as this replica sees it: the backlog per till."""

    held: int  # its events we hold, contiguously
    behind: int  # the most any peer has told us it holds beyond that
    missing_for: float | None  # seconds since we first knew of a missing event; None: none
    last_seen: float | None  # seconds since it last announced itself; None: never heard


@dataclass(frozen=True)
class SyncStatus:
    replica_id: str
    vv: dict[str, int]
    peers: dict[str, PeerStatus]
    lag: dict[str, int]  # per origin: events some usable peer holds that we lack
    inflight: list[InflightStatus]
    incidents: list[Incident]
    receipts: dict[str, int]  # per peer: how many of our own events it holds durably
    origins: dict[str, OriginStatus]


# --- scope ------------------------------------------------------------------------------


def holds(replica_id: str) -> Callable[[str], bool]:
    """Which origins `replica_id` holds: HQ everything, a till its store's origins and HQ's.

    Also what `replica_id` may be sent: scope comes from the (permission-fenced)
    id, never from anything the peer claims.
    """
    if replica_id == HQ:
        return lambda origin: True
    prefix = f"{store_of(replica_id)}/"
    return lambda origin: origin == HQ or origin.startswith(prefix)


def scope_label(replica_id: str) -> str:
    """The `scope` field a replica announces: "*" for HQ, else its store."""
    return "*" if replica_id == HQ else str(store_of(replica_id))
