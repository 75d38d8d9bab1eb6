"""Errors of running a replica: its site, its process, its sync links, the ops tools.

They join the one tree under `core.errors.TillmeshError` (drawn there), raised here in
the layer that knows what went wrong::

    TillmeshError
    ├── StorageError (core)
    │   ├── DatabaseLocked (core)
    │   │   └── ReplicaRunning  another process runs this replica (its data lock)
    │   ├── SiteExists          `site init` over a site would cut off its replicas
    │   └── SiteFileError       a site file (TOML) a person wrote is not valid
    ├── SelectsNothing          an ops command's arguments select nothing in this log
    ├── ReplicaError            running a replica of a site
    │   ├── UnknownReplica      not one of the site's replicas
    │   ├── ApiUnavailable      the HTTP API cannot listen on its port
    │   ├── ApiUnprotected      the HTTP API would listen on the network with no token
    │   ├── RetiredSigningKey   a till would sign with a key it rotated away from
    │   ├── ProcessorUnreachable  no answer from the card processor (down, slow, cut off)
    │   └── ProcessorRefused    the card processor answered, refusing the request (4xx)
    └── SyncError               replication protocol / transport
        ├── FrameError          a sync frame is malformed or hostile
        └── LinkError           the NATS link failed (wraps nats errors)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from core.errors import DatabaseLocked, StorageError, TillmeshError

__all__ = [
    "ApiUnavailable",
    "ApiUnprotected",
    "FrameError",
    "LinkError",
    "ProcessorRefused",
    "ProcessorUnreachable",
    "ReplicaError",
    "ReplicaRunning",
    "RetiredSigningKey",
    "SelectsNothing",
    "SiteExists",
    "SiteFileError",
    "SyncError",
    "UnknownReplica",
    "WrittenThroughHq",
]


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


class SelectsNothing(TillmeshError):
    """`command`'s arguments name nothing the log holds (an origin, a store, an event
    type, an event) or contradict each other: an error, not an empty answer."""

    def __init__(self, command: str, detail: str) -> None:
        super().__init__(f"{command}: {detail}")
        self.command = command
        self.detail = detail


class ReplicaError(TillmeshError):
    pass


class UnknownReplica(ReplicaError):
    """A replica id that is not one of the site's (a typo, or another site's folder)."""

    def __init__(self, replica_id: str, known: Sequence[str]) -> None:
        super().__init__(f"no replica {replica_id!r} in this site; it has: {', '.join(known)}")
        self.replica_id = replica_id
        self.known = list(known)


class WrittenThroughHq(ReplicaError):
    """A write of HQ's own chain asked of HQ's PostgreSQL database: only the ingest worker
    that owns HQ's origin (worker 0) appends HQ's events, so the write goes through the
    API it serves (a second writer's events would be refused by the chain heads)."""

    def __init__(self, what: str, route: str, role: str) -> None:
        super().__init__(
            f"HQ on PostgreSQL does not {what} from a database: HQ's events are written by"
            f" its ingest worker 0, through HQ's API: {route} (with a {role}'s token)"
        )
        self.what, self.route, self.role = what, route, role


class ApiUnavailable(ReplicaError):
    """The HTTP API could not listen on its port (uvicorn logged why), so the replica stops
    rather than run on with no API."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"cannot serve the API on {host}:{port}; the replica stopped")
        self.host = host
        self.port = port


class ApiUnprotected(ReplicaError):
    """The API would listen on a network address with no token issued: anyone on the
    LAN could sell, refund or cut the store off. Issue tokens first."""

    def __init__(self, replica_id: str, host: str) -> None:
        super().__init__(
            f"{replica_id} would serve its API on {host} with no API token issued: issue"
            f" one first (tillmesh token issue --replica {replica_id} --role manager ...)"
        )
        self.replica_id = replica_id
        self.host = host


class RetiredSigningKey(ReplicaError):
    """The till's identity folder holds a signing key it rotated away from (an old bundle
    installed over it, or onto a replacement machine): every replica refuses that key's
    events past the rotation, and it may be the stolen one. Refused before any event is
    signed with it."""

    def __init__(self, replica_id: str, key: str, detail: str) -> None:
        super().__init__(
            f"{replica_id}: signing key {key} is retired ({detail}); install the key it"
            " rotated to (its identity folder from before), or have HQ revoke this till and"
            " give the machine a new replica id"
        )
        self.replica_id = replica_id
        self.key = key


class ProcessorUnreachable(ReplicaError):
    """The card processor gave no answer (refused, timed out, failed, cut off): a sale
    goes deferred under the floor limits, a capture waits for the next try."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"card processor {url}: no answer ({detail})")
        self.url = url
        self.detail = detail


class ProcessorRefused(ReplicaError):
    """The card processor answered and refused the request itself (a 4xx: a key reused
    for another amount, a field it does not take): an answer, so never a reason to take
    the card offline, and retrying the same request gets the same refusal."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        super().__init__(f"card processor {url} refused the request (HTTP {status}: {detail})")
        self.url = url
        self.status = status
        self.detail = detail


class SyncError(TillmeshError):
    pass


class FrameError(SyncError):
    def __init__(self, peer: str, detail: str) -> None:
        super().__init__(f"bad frame from {peer}: {detail}")
        self.peer = peer
        self.detail = detail


class LinkError(SyncError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class SiteFileError(StorageError):
    """A site description (TOML) cannot be used; `detail` names the place and why."""

    def __init__(self, path: Path | str, detail: str) -> None:
        super().__init__(str(path), detail)
