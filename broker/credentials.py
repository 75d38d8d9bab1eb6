"""Per-replica NATS credentials and the permissions bound to them.

Every till, HQ, each store's leaf link into HQ and each cluster's route link has
its own user/password. Permissions are what make a compromised or buggy till
harmless to its neighbours: a till can only publish on its *own* event and
version-vector subjects, and send pull requests only as itself (the requester is
part of the pull subject), so it cannot impersonate another replica on the wire,
nor make a responder throttle or blame another replica for its requests.

nats-server checks the subject of a publish, never its reply subject (measured,
2.15: a till's pull on its own pull subject asking for the reply on
``_INBOX.s2.t1.x`` reaches HQ, and ``allow_responses`` would let HQ answer there).
So permissions fence who asks, and the responder answers only on the requester's
own inbox (`broker.subjects.is_inbox_of`, checked by the sync transport).

Credentials files are JSON ``{key: {"user": ..., "password": ...}}`` written with
mode 0600 because they hold secrets. Keys are replica ids (``hq``, ``s1/t1``) plus
`leaf_key(store)` / `route_key(cluster)` for server-to-server links.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import CredentialsError, InvalidReplicaId
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
    validate_name,
    vv_subject,
)

__all__ = [
    "Credentials",
    "Permissions",
    "generate_credentials",
    "generate_store_credentials",
    "leaf_key",
    "leaf_permissions",
    "load_credentials",
    "permissions_for",
    "route_key",
    "save_credentials",
    "write_private",
]

# The shape nats-server expects under `permissions`; rendered by config.py.
Permissions = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:
        # Never let a password leak into logs or test failure output.
        return f"Credentials(user={self.user!r}, password='***')"


def _new_password() -> str:
    return secrets.token_urlsafe(24)


def generate_credentials(user: str) -> Credentials:
    return Credentials(user=user, password=_new_password())


def _user_name(replica_id: str) -> str:
    rid = parse_replica_id(replica_id)
    return HQ if rid.is_hq else f"{rid.store}-{rid.till}"


def leaf_key(store: str) -> str:
    """Credentials key (and user name) of a store's leaf link into HQ."""
    return f"leaf:{validate_name(store, 'store')}"


def route_key(cluster: str) -> str:
    """Credentials key (and user name) of a cluster's route links."""
    return f"route:{validate_name(cluster, 'cluster')}"


def generate_store_credentials(
    store: str, tills: Iterable[str], hq: bool = True
) -> dict[str, Credentials]:
    """Fresh credentials for every till of ``store``, its leaf and route links.

    With ``hq=True`` the HQ replica's own credentials (and HQ's route credentials)
    are included too, so a single call is enough for a one-store deployment or a test.
    """
    validate_name(store, "store")
    creds: dict[str, Credentials] = {}
    for till in tills:
        rid = f"{store}/{validate_name(till, 'till')}"
        creds[rid] = generate_credentials(_user_name(rid))
    creds[leaf_key(store)] = generate_credentials(f"leaf-{store}")
    creds[route_key(store)] = generate_credentials(f"route-{store}")
    if hq:
        creds[HQ] = generate_credentials(HQ)
        creds[route_key(HQ)] = generate_credentials(f"route-{HQ}")  # multi-node HQ
    return creds


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


def save_credentials(path: Path, creds: Mapping[str, Credentials]) -> None:
    """Write ``creds`` as JSON, readable by the owner only (mode 0600)."""
    payload = {k: {"user": c.user, "password": c.password} for k, c in creds.items()}
    write_private(path, json.dumps(payload, indent=2, sort_keys=True).encode())


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by the owner only (0600) from the first byte:
    writing first and chmod-ing after would leave a window where others may read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, data)
    finally:
        os.close(fd)


def load_credentials(path: Path) -> dict[str, Credentials]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CredentialsError(path, str(e)) from e
    if not isinstance(raw, dict):
        raise CredentialsError(path, "top level must be an object")
    return {key: _parse_entry(path, key, entry) for key, entry in raw.items()}


def _parse_entry(path: Path, key: str, entry: object) -> Credentials:
    if not isinstance(entry, dict):
        raise CredentialsError(path, f"entry {key!r} must be an object")
    user, password = entry.get("user"), entry.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise CredentialsError(path, f"entry {key!r} needs non-empty 'user' and 'password'")
    return Credentials(user=user, password=password)
