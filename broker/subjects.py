"""The NATS subject scheme of tillmesh.

A replica id is either ``hq`` or ``<store>/<till>``. Each replica owns a small set
of subjects derived from its id; permissions (see `credentials`) are written in
terms of these same functions, so the scheme and the access rules cannot drift
apart.

    tm.ev.<store>.<till>   live push of events authored/forwarded by the replica
    tm.vv.<store>.<till>   version-vector announcements
    tm.pull.<store>.<till> request/reply: pull ranges from that replica
    _INBOX.<store>.<till>  reply inbox prefix (scoped so permissions can fence it)

HQ uses the single token ``hq`` in place of ``<store>.<till>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.errors import InvalidReplicaId

__all__ = [
    "ALL_EVENTS",
    "ALL_PULL",
    "ALL_VV",
    "EVENTS",
    "HQ",
    "INBOX",
    "PULL",
    "VV",
    "ReplicaId",
    "events_subject",
    "inbox_prefix",
    "is_pull_subject",
    "parse_replica_id",
    "peer_from_inbox",
    "peer_from_subject",
    "pull_subject",
    "replica_token",
    "store_events_wildcard",
    "store_inbox_wildcard",
    "store_of",
    "store_pull_wildcard",
    "store_vv_wildcard",
    "validate_name",
    "vv_subject",
]

HQ = "hq"
EVENTS = "tm.ev"
VV = "tm.vv"
PULL = "tm.pull"
INBOX = "_INBOX"
ALL_EVENTS = f"{EVENTS}.>"
ALL_VV = f"{VV}.>"
ALL_PULL = f"{PULL}.>"

# One NATS token: no dots (token separator), no wildcards, no whitespace. Kept
# deliberately narrow so names are also safe in file names and config strings.
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclass(frozen=True, slots=True)
class ReplicaId:
    """A parsed replica id; ``store`` and ``till`` are None for HQ."""

    store: str | None
    till: str | None

    @property
    def is_hq(self) -> bool:
        return self.store is None

    @property
    def token(self) -> str:
        """The subject tokens naming this replica (``s1.t2`` or ``hq``)."""
        return HQ if self.store is None else f"{self.store}.{self.till}"


def validate_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is a valid store/till name, else raise InvalidReplicaId."""
    if not isinstance(name, str) or _NAME_RE.fullmatch(name) is None:
        raise InvalidReplicaId(str(name), f"{what} must match [A-Za-z0-9_-]{{1,32}}")
    return name


def parse_replica_id(replica_id: str) -> ReplicaId:
    """Parse ``hq`` or ``<store>/<till>``; raise InvalidReplicaId otherwise."""
    if replica_id == HQ:
        return ReplicaId(None, None)
    if not isinstance(replica_id, str) or replica_id.count("/") != 1:
        raise InvalidReplicaId(str(replica_id), "expected 'hq' or '<store>/<till>'")
    store, till = replica_id.split("/")
    try:
        validate_name(store, "store")
        validate_name(till, "till")
    except InvalidReplicaId as e:
        raise InvalidReplicaId(replica_id, e.reason) from None
    # A store literally called "hq" would make tm.ev.hq.<till> ambiguous with the
    # HQ wildcard reasoning in permissions; refuse it outright.
    if store == HQ:
        raise InvalidReplicaId(replica_id, "store may not be named 'hq'")
    return ReplicaId(store, till)


def store_of(replica_id: str) -> str | None:
    """The store of a till replica, None for HQ."""
    return parse_replica_id(replica_id).store


def replica_token(replica_id: str) -> str:
    """``"s1/t2" -> "s1.t2"``, ``"hq" -> "hq"``."""
    return parse_replica_id(replica_id).token


def events_subject(replica_id: str) -> str:
    return f"{EVENTS}.{replica_token(replica_id)}"


def vv_subject(replica_id: str) -> str:
    return f"{VV}.{replica_token(replica_id)}"


def pull_subject(replica_id: str) -> str:
    return f"{PULL}.{replica_token(replica_id)}"


def inbox_prefix(replica_id: str) -> str:
    """Reply-inbox prefix for nats-py's ``inbox_prefix`` connect option."""
    return f"{INBOX}.{replica_token(replica_id)}"


def _store_wildcard(kind: str, store: str) -> str:
    _check_store(store)
    return f"{kind}.{store}.>"


def _check_store(store: str) -> None:
    validate_name(store, "store")
    if store == HQ:
        raise InvalidReplicaId(store, "store may not be named 'hq'")


def store_events_wildcard(store: str) -> str:
    return _store_wildcard(EVENTS, store)


def store_vv_wildcard(store: str) -> str:
    return _store_wildcard(VV, store)


def store_pull_wildcard(store: str) -> str:
    return _store_wildcard(PULL, store)


def store_inbox_wildcard(store: str) -> str:
    return _store_wildcard(INBOX, store)


def _peer_from_tokens(tokens: list[str]) -> str | None:
    candidate = tokens[0] if tokens[:1] == [HQ] else "/".join(tokens[:2])
    try:
        parse_replica_id(candidate)
    except InvalidReplicaId:
        return None
    return candidate


def peer_from_subject(subject: str) -> str | None:
    """``tm.ev.s1.t2`` -> ``s1/t2``, ``tm.vv.hq`` -> ``hq``; None if it names no replica.
    The publisher of a subject is who permissions let publish there."""
    tokens = subject.split(".")[2:]
    exact = len(tokens) == (1 if tokens[:1] == [HQ] else 2)
    return _peer_from_tokens(tokens) if exact else None


def peer_from_inbox(reply: str) -> str | None:
    """``_INBOX.s1.t2.<id>`` -> ``s1/t2``: who may read this reply (inboxes are fenced)."""
    tokens = reply.split(".")
    return _peer_from_tokens(tokens[1:]) if tokens[0] == INBOX and len(tokens) > 2 else None


def is_pull_subject(subject: str) -> bool:
    return subject.startswith(PULL + ".")
