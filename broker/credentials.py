"""Per-replica NATS passwords (password mode).

Every till, HQ, each store's leaf link into HQ and each cluster's route link has
its own user/password; the permissions bound to them are `broker.permissions`.

Credentials files are JSON ``{key: {"user": ..., "password": ...}}`` written with
mode 0600 because they hold secrets. Keys are replica ids (``hq``, ``s1/t1``) plus
`leaf_key(store)` / `route_key(cluster)` for server-to-server links.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.errors import CredentialsError
from broker.files import write_private
from broker.subjects import HQ, parse_replica_id, validate_name

__all__ = [
    "Credentials",
    "generate_credentials",
    "generate_store_credentials",
    "leaf_key",
    "load_credentials",
    "route_key",
    "save_credentials",
]


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


def save_credentials(path: Path, creds: Mapping[str, Credentials]) -> None:
    """Write ``creds`` as JSON, readable by the owner only (mode 0600)."""
    payload = {k: {"user": c.user, "password": c.password} for k, c in creds.items()}
    write_private(path, json.dumps(payload, indent=2, sort_keys=True).encode())


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
