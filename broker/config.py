"""Typed nats-server configurations, rendered to the nats conf format.

Topology: the tills of a store form a NATS *cluster* (full mesh of routes), and
every till server also dials HQ as a *leaf node*, so the store keeps working when
any till or the WAN is down. HQ is a hub (optionally a 3-node cluster) that
accepts one leaf user per store.

Facts about nats-server (v2.15) that shaped this module, verified against its
source and by tests in tests/broker:

* Leaf remotes take user/password only inside the URL
  (``nats-leaf://user:pass@host:port``); there are no separate fields.
* Users in ``leafnodes { authorization { users } }`` cannot carry permissions
  (the parser is a trimmed-down user parser). So HQ leaves that block out: leaf
  connections then authenticate against the top-level ``authorization`` users,
  whose permissions *are* enforced on the leaf link.
* ``leafnodes { reconnect: "1s" }`` is the retry interval of leaf remotes, which
  are retried forever. A bare integer (seconds) still parses but ``nats-server -t``
  flags it ("should be converted to a duration"), so we render a duration string.
  We use 1 s so a healed WAN is picked up quickly (measured: leaf back ~1 s after
  HQ restarts).
* Cluster routes take credentials in the route URL
  (``nats-route://user:pass@host:port``) and check them against
  ``cluster { authorization { user, password } }``.
* Port 0 (ephemeral) cannot be used for cluster/leaf ports that peers must dial,
  hence `free_port()`.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from broker.credentials import (
    Credentials,
    Permissions,
    leaf_key,
    leaf_permissions,
    permissions_for,
    route_key,
)
from broker.errors import ConfigError, InvalidReplicaId
from broker.subjects import HQ, parse_replica_id, validate_name

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "ClusterSpec",
    "LeafRemoteSpec",
    "ServerConfig",
    "UserSpec",
    "free_port",
    "hq_server_config",
    "render_config",
    "till_server_config",
]

# Sync frames can carry many events; 8 MiB stays well under max_pending (64 MiB).
DEFAULT_MAX_PAYLOAD = 8 * 1024 * 1024


# Below Linux's ephemeral range (32768-60999): the kernel never hands these to outbound
# sockets, which is what took a "free" port from under a starting nats-server before.
_LISTEN_PORTS = range(20_000, 32_000)
_handed_out: set[int] = set()  # never give one port twice in a process


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, for a listener started a moment later.

    Ports come from outside the ephemeral range and are not repeated within a
    process; another program binding the same port in between is still possible
    and shows up as a ServerStartError ("address already in use").
    """
    for _ in range(500):
        port = random.choice(_LISTEN_PORTS)
        if port not in _handed_out and _bindable(host, port):
            _handed_out.add(port)
            return port
    raise ConfigError("port", f"no free port in {_LISTEN_PORTS.start}-{_LISTEN_PORTS.stop - 1}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class UserSpec:
    credentials: Credentials
    permissions: Permissions | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    port: int
    routes: tuple[str, ...] = ()  # "host:port" of the peers' cluster listeners
    credentials: Credentials | None = None
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class LeafRemoteSpec:
    urls: tuple[str, ...]  # "host:port" of the hub's leafnode listeners
    credentials: Credentials | None = None
    disabled: bool = False  # nats-server >= 2.12: a reload with this set drops the link


@dataclass(frozen=True)
class ServerConfig:
    name: str
    port: int
    host: str = "127.0.0.1"
    http_port: int | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    users: tuple[UserSpec, ...] = ()
    cluster: ClusterSpec | None = None
    leaf_port: int | None = None  # accept leaf connections (hub side)
    leaf_remotes: tuple[LeafRemoteSpec, ...] = ()
    leaf_reconnect_seconds: float = 1.0
    # server_tags, shown in /varz: EmbeddedNatsServer tags each start to know its own server.
    tags: tuple[str, ...] = ()
    # Raw conf text appended verbatim; an escape hatch for experiments and tests.
    extra_conf: str = field(default="", repr=False)

    @property
    def client_url(self) -> str:
        return f"nats://{self.host}:{self.port}"


# ---------------------------------------------------------------- rendering


def _quote(value: str) -> str:
    # The conf lexer understands "..." with backslash escapes. Control characters
    # have no business in a config value, so refuse rather than guess an escape.
    if any(ord(ch) < 0x20 for ch in value):
        raise ConfigError("string", f"control character in {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_value(value: Any, indent: int) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, Mapping):
        return _render_map(value, indent)
    if isinstance(value, list | tuple):
        pad = "  " * (indent + 1)
        items = "".join(f"{pad}{_render_value(v, indent + 1)}\n" for v in value)
        return "[\n" + items + "  " * indent + "]"
    raise ConfigError("value", f"cannot render {type(value).__name__}")


def _render_map(value: Mapping[str, Any], indent: int) -> str:
    pad = "  " * (indent + 1)
    body = "".join(f"{pad}{k}: {_render_value(v, indent + 1)}\n" for k, v in value.items())
    return "{\n" + body + "  " * indent + "}"


def _auth_url(scheme: str, creds: Credentials | None, hostport: str) -> str:
    if creds is None:
        return f"{scheme}://{hostport}"
    # Percent-encode so ':' '@' '/' in a secret cannot break the URL.
    return f"{scheme}://{quote(creds.user, safe='')}:{quote(creds.password, safe='')}@{hostport}"


def _user_entry(spec: UserSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"user": spec.credentials.user, "password": spec.credentials.password}
    if spec.permissions is not None:
        entry["permissions"] = spec.permissions
    return entry


def _cluster_block(c: ClusterSpec) -> dict[str, Any]:
    block: dict[str, Any] = {"name": c.name, "listen": f"{c.host}:{c.port}"}
    if c.credentials is not None:
        block["authorization"] = {
            "user": c.credentials.user,
            "password": c.credentials.password,
            "timeout": 2,
        }
    block["routes"] = [_auth_url("nats-route", c.credentials, r) for r in c.routes]
    return block


def _leaf_block(cfg: ServerConfig) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if cfg.leaf_port is not None:
        block["listen"] = f"{cfg.host}:{cfg.leaf_port}"
    if cfg.leaf_remotes:
        block["reconnect"] = f"{round(cfg.leaf_reconnect_seconds * 1000)}ms"
        block["remotes"] = [_remote_entry(r) for r in cfg.leaf_remotes]
    return block


def _remote_entry(remote: LeafRemoteSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "urls": [_auth_url("nats-leaf", remote.credentials, u) for u in remote.urls]
    }
    if remote.disabled:
        entry["disabled"] = True
    return entry


def _validate(cfg: ServerConfig) -> None:
    try:
        validate_name(cfg.name, "server name")
    except InvalidReplicaId as e:
        raise ConfigError("name", e.reason) from None
    ports = {"port": cfg.port, "http_port": cfg.http_port, "leaf_port": cfg.leaf_port}
    if cfg.cluster is not None:
        ports["cluster.port"] = cfg.cluster.port
    for name, port in ports.items():
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(name, f"port {port} out of range")
    for name in ("leaf_port", "cluster.port"):
        if ports.get(name) == 0:
            raise ConfigError(name, "peers must dial this port; pick one with free_port()")
    if cfg.max_payload <= 0:
        raise ConfigError("max_payload", "must be positive")
    if not 0.001 <= cfg.leaf_reconnect_seconds <= 3600:
        raise ConfigError("leaf_reconnect_seconds", "must be between 1 ms and 1 h")


def render_config(cfg: ServerConfig) -> str:
    """The nats-server conf text for ``cfg``."""
    _validate(cfg)
    top: dict[str, Any] = {
        "server_name": cfg.name,
        "listen": f"{cfg.host}:{cfg.port}",
        "max_payload": cfg.max_payload,
    }
    if cfg.http_port is not None:
        top["http"] = f"{cfg.host}:{cfg.http_port}"
    if cfg.tags:
        top["server_tags"] = list(cfg.tags)
    if cfg.users:
        top["authorization"] = {"users": [_user_entry(u) for u in cfg.users]}
    if cfg.cluster is not None:
        top["cluster"] = _cluster_block(cfg.cluster)
    if cfg.leaf_port is not None or cfg.leaf_remotes:
        top["leafnodes"] = _leaf_block(cfg)
    body = "".join(f"{k}: {_render_value(v, 0)}\n" for k, v in top.items())
    header = f"# nats-server config for {cfg.name}, generated by broker.config\n"
    return header + body + (cfg.extra_conf + "\n" if cfg.extra_conf else "")


# ---------------------------------------------------------------- factories


def _need(creds: Mapping[str, Credentials], key: str) -> Credentials:
    try:
        return creds[key]
    except KeyError:
        raise ConfigError("credentials", f"missing entry {key!r}") from None


def _store_users(store: str, creds: Mapping[str, Credentials]) -> tuple[UserSpec, ...]:
    users = []
    for key, c in sorted(creds.items()):
        if "/" in key and parse_replica_id(key).store == store:
            users.append(UserSpec(c, permissions_for(key, store)))
    return tuple(users)


def till_server_config(
    store: str,
    till: str,
    creds: Mapping[str, Credentials],
    *,
    port: int,
    cluster_port: int,
    peer_cluster_addrs: Sequence[str] = (),
    hq_leaf_addrs: Sequence[str] = (),
    http_port: int | None = None,
    host: str = "127.0.0.1",
) -> ServerConfig:
    """The server a till runs: store users, a store cluster, a leaf link to HQ.

    ``creds`` must hold every till of the store (each gets a user), the store's
    route credentials and, if ``hq_leaf_addrs`` is given, its leaf credentials.
    """
    rid = parse_replica_id(f"{store}/{till}")
    cluster = ClusterSpec(
        name=f"store-{store}",
        port=cluster_port,
        routes=tuple(peer_cluster_addrs),
        credentials=_need(creds, route_key(store)),
        host=host,
    )
    remotes: tuple[LeafRemoteSpec, ...] = ()
    if hq_leaf_addrs:
        remotes = (LeafRemoteSpec(tuple(hq_leaf_addrs), _need(creds, leaf_key(store))),)
    return ServerConfig(
        name=f"{rid.store}-{rid.till}",
        port=port,
        host=host,
        http_port=http_port,
        users=_store_users(store, creds),
        cluster=cluster,
        leaf_remotes=remotes,
    )


def hq_server_config(
    creds: Mapping[str, Credentials],
    stores: Sequence[str],
    *,
    port: int,
    leaf_port: int,
    name: str = HQ,
    cluster_port: int | None = None,
    peer_cluster_addrs: Sequence[str] = (),
    http_port: int | None = None,
    host: str = "127.0.0.1",
) -> ServerConfig:
    """The HQ hub: the HQ client user plus one permission-bound leaf user per store.

    Leaf users live in the top-level ``authorization`` (see module docstring for
    why). For a 3-node HQ give ``cluster_port`` and the peers' cluster addresses;
    ``creds`` then needs ``route_key("hq")``.
    """
    users = [UserSpec(_need(creds, HQ), permissions_for(HQ))]
    users += [UserSpec(_need(creds, leaf_key(s)), leaf_permissions(s)) for s in stores]
    cluster = None
    if cluster_port is not None:
        cluster = ClusterSpec(
            name="hq",
            port=cluster_port,
            routes=tuple(peer_cluster_addrs),
            credentials=_need(creds, route_key(HQ)),
            host=host,
        )
    return ServerConfig(
        name=name,
        port=port,
        host=host,
        http_port=http_port,
        users=tuple(users),
        cluster=cluster,
        leaf_port=leaf_port,
    )
