"""The one exception hierarchy of tillmesh.

Every error a caller can act on is a subclass of `TillmeshError` and carries the
fields that describe it, so callers branch on type and read attributes rather than
parse messages. sqlite3 and NATS errors are translated where they cross into
tillmesh (`raise ... from e`), so the original stays attached as `__cause__`.

    TillmeshError
    ├── EventError                  an event (or frame) is unacceptable as given
    │   ├── DecodeError             bytes are not a well-formed event / frame
    │   ├── ValidationError         well-formed, but a field breaks the schema
    │   ├── OversizedError          larger than the configured limit
    │   ├── UnknownEventType        type or schema version newer than this build
    │   ├── OutOfScope              origin not replicated to this replica
    │   └── NonCanonicalEncoding    decodes, but re-encodes to other bytes
    ├── IntegrityError              the log refuses an event to protect history
    │   ├── Equivocation            same (origin, seq), different content
    │   └── ChainBroken             prev-hash does not match the origin's head
    ├── ClockError
    │   └── ClockSkew               remote timestamp too far ahead of our wall clock
    ├── StorageError                the SQLite file could not be used
    │   ├── DatabaseLocked
    │   │   └── ReplicaRunning      another process runs this replica (its data lock)
    │   ├── DatabaseCorrupt
    │   ├── SchemaTooNew            the file was written by a newer tillmesh
    │   └── SiteExists              `site init` over a site would cut off its replicas
    ├── ConflictError               business conflict handling
    │   ├── UnknownConflict
    │   └── WrongStore              a stock fix must be appended by a till of its store
    ├── ReportError                 a report asked for a grouping or window it cannot give
    ├── SelectsNothing              an ops command's arguments select nothing in this log
    ├── ReplicaError                running a replica of a site
    │   ├── UnknownReplica          not one of the site's replicas
    │   └── ApiUnavailable          the HTTP API cannot listen on its port
    └── SyncError                   replication protocol / transport
        ├── FrameError              a sync frame is malformed or hostile
        └── TransportError          the NATS link failed (wraps nats errors)

Broker (nats-server process) errors live in `broker.errors` because
`broker/` imports nothing from the rest of tillmesh.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "ApiUnavailable",
    "ChainBroken",
    "ClockError",
    "ClockSkew",
    "ConflictError",
    "DatabaseCorrupt",
    "DatabaseLocked",
    "DecodeError",
    "Equivocation",
    "EventError",
    "FrameError",
    "IntegrityError",
    "NonCanonicalEncoding",
    "OutOfScope",
    "OversizedError",
    "ReplicaError",
    "ReplicaRunning",
    "ReportError",
    "SchemaTooNew",
    "SelectsNothing",
    "SiteExists",
    "StorageError",
    "SyncError",
    "TillmeshError",
    "TransportError",
    "UnknownConflict",
    "UnknownEventType",
    "UnknownReplica",
    "ValidationError",
    "WrongStore",
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


class ValidationError(EventError):
    def __init__(self, event_type: str, detail: str) -> None:
        super().__init__(f"invalid {event_type!r} event: {detail}")
        self.event_type = event_type
        self.detail = detail


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


class IntegrityError(TillmeshError):
    """The log refuses an event because accepting it would rewrite history."""


class Equivocation(IntegrityError):
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


class ChainBroken(IntegrityError):
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


class SiteExists(StorageError):
    """`site init` on a folder that holds a site: new ports and credentials would cut
    off the replicas running with the old ones."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            str(path),
            "a site already exists here; a new one would give its replicas new ports and"
            " credentials (replace it with --force)",
        )


class ReplicaRunning(DatabaseLocked):
    """Another process runs this replica: two copies would write one log and answer as
    one till (the second even reached the first one's nats-server)."""

    def __init__(self, path: Path | str, replica_id: str, holder: int | None) -> None:
        who = f"pid {holder}" if holder else "another process"
        super().__init__(str(path), f"{replica_id} is already running ({who}); stop it first")
        self.replica_id = replica_id
        self.holder = holder


# --- conflicts --------------------------------------------------------------------


class ConflictError(TillmeshError):
    pass


class UnknownConflict(ConflictError):
    def __init__(self, conflict_id: str) -> None:
        super().__init__(f"no conflict with id {conflict_id!r}")
        self.conflict_id = conflict_id


class WrongStore(ConflictError):
    """A resolution would append stock events for `store` on `replica`, but stock
    events count in the store of the replica that appends them: it must be resolved
    on a till of `store`."""

    def __init__(self, conflict_id: str, store: str, replica: str) -> None:
        super().__init__(
            f"conflict {conflict_id} is about the stock of store {store!r}, and a stock event "
            f"appended on {replica!r} would not count there: resolve it on a till of store "
            f"{store!r} (accept works anywhere)"
        )
        self.conflict_id = conflict_id
        self.store = store
        self.replica = replica


class ReportError(TillmeshError):
    """A report was asked for with `what` = `value`, which it cannot give, for `reason`."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(f"report: {what} {value!r}: {reason}")
        self.what = what
        self.value = value
        self.reason = reason


class SelectsNothing(TillmeshError):
    """`command`'s arguments name nothing the log holds (an origin, a store, an event
    type, an event) or contradict each other: an error, not an empty answer."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"{command}: {detail}")
        self.command = command
        self.detail = detail


# --- running a replica --------------------------------------------------------------


class ReplicaError(TillmeshError):
    pass


class UnknownReplica(ReplicaError):
    """A replica id that is not one of the site's (a typo, or another site's folder)."""

    def __init__(self, replica_id: str, known: Sequence[str]) -> None:
        super().__init__(f"no replica {replica_id!r} in this site; it has: {', '.join(known)}")
        self.replica_id = replica_id
        self.known = list(known)


class ApiUnavailable(ReplicaError):
    """The HTTP API could not listen on its port (uvicorn logged why), so the replica stops
    rather than run on with no API."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot serve the API on {host}:{port}; the replica stopped")
        self.host = host
        self.port = port


# --- sync ---------------------------------------------------------------------------


class SyncError(TillmeshError):
    pass


class FrameError(SyncError):
    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(f"bad frame from {peer}: {detail}")
        self.peer = peer
        self.detail = detail


class TransportError(SyncError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
