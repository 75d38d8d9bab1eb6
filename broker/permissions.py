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
    hq_pulls_to_store,
    inbox_prefix,
    parse_replica_id,
    pulls_from,
    pulls_to,
    store_events_wildcard,
    store_inbox_wildcard,
    store_pulls_to_hq,
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


def leaf_permissions(store: str) -> Permissions:
    """Permissions of a store's leaf connection, as enforced by the HQ hub.

    publish = what the store may inject into HQ; subscribe = what HQ forwards down.
    The store's own ev/vv subjects are deliberately NOT subscribable: the tills of
    a store already see each other over their cluster routes. (Measured: even when
    allowed, nats-server 2.15 does not echo them back down another leaf of the same
    cluster; this is least privilege, not the only guard against duplicates.)

    Pulls cross the leaf only between HQ and the store's tills (tills of one store
    pull from each other over their routes): up, those the store's tills send HQ,
    naming a till of this store as the requester; down, those HQ sends them. So a
    compromised store server cannot send HQ a pull in another store's name.

    ``allow_responses`` does NOT cover replies crossing a leaf link (measured: the
    HQ request times out without it), hence the explicit ``_INBOX.hq.>`` grant.
    """
    return _perms(
        publish=[
            store_events_wildcard(store),
            store_vv_wildcard(store),
            store_pulls_to_hq(store),
            # Replies of the store's responders to HQ's pull requests.
            f"{inbox_prefix(HQ)}.>",
        ],
        subscribe=[
            events_subject(HQ),
            vv_subject(HQ),
            hq_pulls_to_store(store),
            store_inbox_wildcard(store),
        ],
    )
