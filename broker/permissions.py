"""The NATS permissions bound to each replica's identity and to each store's leaf link.

Permissions are what make a compromised or buggy till harmless to its neighbours: a
till can only publish on its *own* event and version-vector subjects, and send pull
requests only as itself (the requester is part of the pull subject), so it cannot
impersonate another replica on the wire, nor make a responder throttle or blame
another replica for its requests.

nats-server checks the subject of a publish, never its reply subject (measured,
2.15: a till's pull on its own pull subject asking for the reply on
``_INBOX.s2.t1.x`` reaches HQ, and ``allow_responses`` would let HQ answer there).
So permissions fence who asks, and the responder answers only on the requester's
own inbox (`broker.subjects.is_inbox_of`, checked by the sync transport).
"""

from __future__ import annotations

from typing import Any

from broker.errors import InvalidReplicaId
from broker.subjects import (
    ALL_EVENTS,
    ALL_VV,
    HQ,
    events_subject,
    inbox_prefix,
    parse_replica_id,
    pull_subject,
    pulls_from,
    pulls_to,
    store_events_wildcard,
    store_vv_wildcard,
    vv_subject,
)

__all__ = ["Permissions", "leaf_permissions", "permissions_for"]

# The shape nats-server expects under `permissions`; rendered by config.py.
Permissions = dict[str, Any]


def _perms(publish: list[str], subscribe: list[str]) -> Permissions:
    # allow_responses lets the user reply to any request it *received* (one reply,
    # within the server's default TTL) without a blanket publish grant on _INBOX.>.
    return {
        "publish": {"allow": publish},
        "subscribe": {"allow": subscribe},
        "allow_responses": True,
    }


def permissions_for(replica_id: str, store_of_replica: str | None = None) -> Permissions:
    """NATS permissions for a replica's client connection.

    It publishes its own events and vector, and pull requests naming itself as the
    requester (`pulls_from`); it subscribes to what it holds, to the pulls addressed
    to it (`pulls_to`) and to its own reply inbox. Replies to the pulls it received
    go out under ``allow_responses``.

    ``store_of_replica`` is optional and, when given, must agree with the id; it
    exists so callers that already track the store get a consistency check.
    """
    rid = parse_replica_id(replica_id)
    if store_of_replica is not None and store_of_replica != rid.store:
        raise InvalidReplicaId(replica_id, f"does not belong to store {store_of_replica!r}")
    publish = [events_subject(replica_id), vv_subject(replica_id), *pulls_from(replica_id)]
    own = [pulls_to(replica_id), f"{inbox_prefix(replica_id)}.>"]
    if rid.is_hq:
        return _perms(publish=publish, subscribe=[ALL_EVENTS, ALL_VV, *own])
    assert rid.store is not None
    holds = [
        store_events_wildcard(rid.store),
        events_subject(HQ),
        store_vv_wildcard(rid.store),
        vv_subject(HQ),
    ]
    return _perms(publish=publish, subscribe=[*holds, *own])


def leaf_permissions(replica_id: str) -> Permissions:
    """Permissions of one till's leaf connection, as enforced by the HQ hub.

    publish = what the till may inject into HQ; subscribe = what HQ forwards down. Each
    till's leaf speaks for that till alone: its own events and vector, pulls in its own
    name, and replies to HQ's pulls (its own events and any it holds, signed by their
    origins). So a stolen bundle cannot announce, pull or push in another till's name at
    HQ, nor get another till backed off there. Another till's events still reach HQ:
    over that till's own leaf, or in the replies of any till HQ pulls from.

    The till's own store's subjects are not subscribable: its peers reach it over the
    store's routes. (Measured: even when allowed, nats-server 2.15 does not echo them
    back down another leaf of the same cluster.)

    ``allow_responses`` does NOT cover replies crossing a leaf link (measured: the
    HQ request times out without it), hence the explicit ``_INBOX.hq.>`` grant.
    """
    rid = parse_replica_id(replica_id)
    if rid.is_hq:
        raise InvalidReplicaId(replica_id, "HQ has no leaf link")
    return _perms(
        publish=[
            events_subject(replica_id),
            vv_subject(replica_id),
            pull_subject(HQ, replica_id),
            f"{inbox_prefix(HQ)}.>",  # replies of the till's responder to HQ's pulls
        ],
        subscribe=[
            events_subject(HQ),
            vv_subject(HQ),
            pull_subject(replica_id, HQ),
            f"{inbox_prefix(replica_id)}.>",
        ],
    )
