"""The one exception hierarchy of tillmesh, and the errors of its bottom layer.

Every error a caller can act on is a subclass of `TillmeshError` and carries the
fields that describe it, so callers branch on type and read attributes rather than
parse messages. sqlite3 and NATS errors are translated where they cross into
tillmesh (`raise ... from e`), so the original stays attached as `__cause__`.
Each layer raises its own errors in this one tree: `core` these; `conflict.errors`
and `replicas.errors` theirs (marked below). Names are tillmesh's own, never those
of the libraries underneath (no `ValidationError`, `IntegrityError`, `TransportError`).

    TillmeshError
    ├── EventError                  an event (or frame) is unacceptable as given
    │   ├── DecodeError             bytes are not a well-formed event / frame
    │   ├── SchemaViolation         well-formed, but a field breaks the schema
    │   │   └── CardNumberInText    a text field holds a full card number
    │   ├── OversizedError          larger than the configured limit
    │   ├── UnknownEventType        type or schema version newer than this build
    │   ├── OutOfScope              origin not replicated to this replica
    │   ├── NonCanonicalEncoding    decodes, but re-encodes to other bytes
    │   ├── WrongAuthor             a type its origin may not write (a till's product)
    │   └── SignatureError          not signed by its origin's key (`core.signing`)
    │       ├── UnknownOrigin       an origin the site's key registry does not name
    │       └── UnknownKey          signed by a key of its origin not known here yet (held)
    ├── ChainError                  the log refuses an event to protect an origin's chain
    │   ├── Equivocation            same (origin, seq), different content
    │   └── ChainBroken             prev-hash does not match the origin's head
    ├── ClockError
    │   └── ClockSkew               remote timestamp too far ahead of our wall clock
    ├── StorageError                the SQLite file could not be used
    │   ├── DatabaseLocked
    │   │   └── ReplicaRunning      (replicas) another process runs this replica
    │   ├── DatabaseCorrupt
    │   ├── SchemaTooNew            the file was written by a newer tillmesh
    │   └── SiteExists              (replicas) `site init` over a running site
    ├── ConflictError               (conflict) business conflict handling
    │   ├── UnknownConflict
    │   ├── WrongStore              a stock fix must be appended by a till of its store
    │   └── PolicyError             a site policy cannot be read or set
    ├── ReportError                 (conflict) a report it cannot give
    ├── SelectsNothing              (replicas) ops arguments that select nothing
    ├── ReplicaError                (replicas) running a replica of a site
    │   ├── UnknownReplica          not one of the site's replicas
    │   └── ApiUnavailable          the HTTP API cannot listen on its port
    └── SyncError                   (replicas) replication protocol / transport
        ├── FrameError              a sync frame is malformed or hostile
        └── LinkError               the NATS link failed (wraps nats errors)

Broker (nats-server process) errors live in `broker.errors` because
`broker/` imports nothing from the rest of tillmesh.
"""

from __future__ import annotations

__all__ = [
    "CardNumberInText",
    "ChainBroken",
    "ChainError",
    "ClockError",
    "ClockSkew",
    "DatabaseCorrupt",
    "DatabaseLocked",
    "DecodeError",
    "Equivocation",
    "EventError",
    "NonCanonicalEncoding",
    "OutOfScope",
    "OversizedError",
    "SchemaTooNew",
    "SchemaViolation",
    "SignatureError",
    "StorageError",
    "TillmeshError",
    "UnknownEventType",
    "UnknownKey",
    "UnknownOrigin",
    "WrongAuthor",
]


class TillmeshError(Exception):
    """Base of every tillmesh error."""


# --- events -----------------------------------------------------------------


class EventError(TillmeshError):
    """An event, or a frame of events, cannot be accepted as given."""


class DecodeError(EventError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"cannot decode: {detail}")
        self.detail = detail


class SchemaViolation(EventError):
    def __init__(self, event_type: str, detail: str) -> None:
        super().__init__(f"invalid {event_type!r} event: {detail}")
        self.event_type = event_type
        self.detail = detail


class CardNumberInText(SchemaViolation):
    """A text field holds a full card number. The refused event is never kept as
    evidence in full: its bytes hold the number (quarantine keeps origin, seq, why)."""


class OversizedError(EventError):
    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, limit is {limit}")
        self.what = what
        self.size = size
        self.limit = limit


class UnknownEventType(EventError):
    """Newer than this build: stored and forwarded, but not applied to state."""

    def __init__(self, event_type: str, schema: int) -> None:
        super().__init__(f"unknown event type {event_type!r} (schema {schema})")
        self.event_type = event_type
        self.schema = schema


class OutOfScope(EventError):
    def __init__(self, origin: str, replica: str) -> None:
        super().__init__(f"events of {origin!r} are not replicated to {replica!r}")
        self.origin = origin
        self.replica = replica


class NonCanonicalEncoding(EventError):
    def __init__(self, origin: str, seq: int) -> None:
        super().__init__(f"{origin}:{seq} is not canonically encoded")
        self.origin = origin
        self.seq = seq


# --- integrity ----------------------------------------------------------------


class WrongAuthor(EventError):
    """An event of a type its origin may not write: ingest applies the API's rules."""

    def __init__(self, origin: str, seq: int, event_type: str, authors: str) -> None:
        super().__init__(f"{origin}:{seq}: only {authors} may write {event_type}")
        self.origin = origin
        self.seq = seq
        self.event_type = event_type


class SignatureError(EventError):
    """The event's signature does not verify with its origin's public key (or is
    missing): someone else wrote it, or it was changed on the way."""

    def __init__(self, origin: str, seq: int, reason: str, key: str = "") -> None:
        with_key = f" (key {key})" if key else ""
        super().__init__(f"{origin}:{seq}: {reason}{with_key}")
        self.origin = origin
        self.seq = seq
        self.reason = reason
        self.key = key


class UnknownOrigin(SignatureError):
    """No key for this origin in the site's registry: not a replica of this site."""

    def __init__(self, origin: str, seq: int) -> None:
        super().__init__(origin, seq, "no key for this origin in the site's registry")


class UnknownKey(SignatureError):
    """Signed by a key its signature names but this replica does not know for its origin
    yet: HQ's `key.rotated` may still be on its way. Held, not refused, until it comes."""

    def __init__(self, origin: str, seq: int, key: str) -> None:
        super().__init__(origin, seq, "signed by a key not known here (yet)", key)


class ChainError(TillmeshError):
    """The log refuses an event because accepting it would rewrite history."""


class Equivocation(ChainError):
    """Two different events claim the same (origin, seq). Both are kept as evidence."""

    def __init__(self, origin: str, seq: int, stored_hash: bytes, offered_hash: bytes) -> None:
        super().__init__(
            f"equivocation at {origin}:{seq}: stored {stored_hash.hex()[:16]}, "
            f"offered {offered_hash.hex()[:16]}"
        )
        self.origin = origin
        self.seq = seq
        self.stored_hash = stored_hash
        self.offered_hash = offered_hash


class ChainBroken(ChainError):
    def __init__(self, origin: str, seq: int, expected_prev: bytes, got_prev: bytes) -> None:
        super().__init__(
            f"hash chain broken at {origin}:{seq}: expected prev {expected_prev.hex()[:16]}, "
            f"got {got_prev.hex()[:16]}"
        )
        self.origin = origin
        self.seq = seq
        self.expected_prev = expected_prev
        self.got_prev = got_prev


# --- clock ------------------------------------------------------------------------


class ClockError(TillmeshError):
    pass


class ClockSkew(ClockError):
    def __init__(self, remote_ms: int, local_ms: int, max_offset_ms: int) -> None:
        super().__init__(
            f"remote clock {remote_ms - local_ms} ms ahead of local (max {max_offset_ms} ms)"
        )
        self.remote_ms = remote_ms
        self.local_ms = local_ms
        self.max_offset_ms = max_offset_ms


# --- storage ---------------------------------------------------------------------


class StorageError(TillmeshError):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.detail = detail


class DatabaseLocked(StorageError):
    pass


class DatabaseCorrupt(StorageError):
    pass


class SchemaTooNew(StorageError):
    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(path, f"schema version {found}, this build supports up to {supported}")
        self.found = found
        self.supported = supported
