"""The NATS subject scheme of tillmesh.

A replica id is either ``hq`` or ``<store>/<till>``. Each replica owns a small set
of subjects derived from its id; permissions (`broker.permissions`) are written in
terms of these same functions, so the scheme and the access rules cannot drift
apart.

    tm.ev.<store>.<till>             live push of events authored/forwarded by the replica
    tm.vv.<store>.<till>             version-vector announcements
    tm.pull.<target>.<requester>     request/reply: <requester> pulls ranges from <target>
    _INBOX.<store>.<till>            reply inbox prefix (scoped so permissions can fence it)

HQ uses the single token ``hq`` in place of ``<store>.<till>``; so ``<target>`` and
``<requester>`` are each ``hq`` or ``<store>.<till>`` (``tm.pull.hq.s1.t2``: till
s1/t2 pulls from HQ; ``tm.pull.s1.t1.hq``: HQ pulls from s1/t1). That is
unambiguous because no store may be named ``hq``.

A pull subject names its requester because the subject is what permissions fence:
each replica may publish pulls only as itself (`pulls_from`) and subscribe only to
pulls addressed to it (`pulls_to`), so the responder knows who asks from the subject
alone. The reply subject is the publisher's free choice and proves nothing; a
responder answers only a reply inbox of the requester's own (`is_inbox_of`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from broker.errors import InvalidReplicaId

__all__ = [
    "ALL_EVENTS",
    "ALL_VV",
    "EVENTS",
    "HQ",
    "INBOX",
    "PULL",
    "VV",
    "ReplicaId",
    "events_subject",
    "hq_pulls_to_store",
    "inbox_prefix",
    "is_inbox_of",
    "is_pull_subject",
    "parse_replica_id",
    "peer_from_subject",
    "pull_parties",
    "pull_subject",
    "pulls_from",
    "pulls_to",
    "replica_token",
    "store_events_wildcard",
    "store_inbox_wildcard",
    "store_of",
    "store_pulls_to_hq",
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
    # A store or till literally called "hq" would make subjects ambiguous with HQ's
    # (tm.ev.hq.<till>; tm.pull.*.*.hq, HQ's pulls, would match a till "hq"'s too).
    if HQ in (store, till):
        raise InvalidReplicaId(replica_id, "no store or till may be named 'hq'")
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


def pull_subject(target: str, requester: str) -> str:
    """Where ``requester`` sends a pull request to ``target``:
    ``pull_subject("hq", "s1/t2") == "tm.pull.hq.s1.t2"``."""
    return f"{PULL}.{replica_token(target)}.{replica_token(requester)}"


def pulls_to(replica_id: str) -> str:
    """Every pull addressed to ``replica_id``, whoever sends it: ``tm.pull.s1.t2.>``."""
    return f"{PULL}.{replica_token(replica_id)}.>"


def pulls_from(replica_id: str) -> list[str]:
    """Every pull ``replica_id`` may send, always naming itself: a till pulls from its
    store's tills and HQ (``tm.pull.s1.*.s1.t2``, ``tm.pull.hq.s1.t2``), HQ from any
    till (``tm.pull.*.*.hq``; no till may be called ``hq``, so that names HQ alone)."""
    rid = parse_replica_id(replica_id)
    if rid.is_hq:
        return [f"{PULL}.*.*.{HQ}"]
    return [f"{PULL}.{rid.store}.*.{rid.token}", f"{PULL}.{HQ}.{rid.token}"]


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


def store_pulls_to_hq(store: str) -> str:
    """The pulls ``store``'s tills send HQ: ``tm.pull.hq.<store>.*``."""
    _check_store(store)
    return f"{PULL}.{HQ}.{store}.*"


def hq_pulls_to_store(store: str) -> str:
    """The pulls HQ sends ``store``'s tills: ``tm.pull.<store>.*.hq``."""
    _check_store(store)
    return f"{PULL}.{store}.*.{HQ}"


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


def _take_replica(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The replica named by the leading tokens (one for ``hq``, else two), and the rest."""
    n = 1 if tokens[:1] == [HQ] else 2
    return _peer_from_tokens(tokens), tokens[n:]


def pull_parties(subject: str) -> tuple[str, str] | None:
    """``tm.pull.hq.s1.t2`` -> ``("hq", "s1/t2")``: (target, requester), or None unless
    the subject names exactly a valid target and a valid requester."""
    if not is_pull_subject(subject):
        return None
    target, rest = _take_replica(subject[len(PULL) + 1 :].split("."))
    requester, rest = _take_replica(rest)
    if target is None or requester is None or rest:
        return None
    return target, requester


def is_inbox_of(replica_id: str, reply: str) -> bool:
    """Whether ``reply`` is one of ``replica_id``'s own reply inboxes
    (``_INBOX.s1.t2.<id>``), the only ones it may read (permissions fence them)."""
    prefix = inbox_prefix(replica_id) + "."
    if not reply.startswith(prefix):
        return False
    # Plain tokens only: a wildcard reply would be no single inbox at all.
    return all(t not in ("", "*", ">") for t in reply[len(prefix) :].split("."))


def is_pull_subject(subject: str) -> bool:
    return subject.startswith(PULL + ".")
