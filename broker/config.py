"""Typed nats-server configurations, rendered to the nats conf format.

Topology: the tills of a store form a NATS *cluster* (full mesh of routes), and
every till server also dials HQ as a *leaf node*, so the store keeps working when
any till or the WAN is down. HQ is a hub (optionally a 3-node cluster) that knows
each till as a leaf user bound to its store's leaf permissions.

Nobody has a password. Clients and leaf links authenticate by nkey (a till's one key
is its client user on its store's servers and its leaf user at HQ), routes by mutual
TLS with the site CA (`till_server_config` / `hq_server_config`).

Facts about nats-server that shaped this module, verified against its source (v2.15)
and measured against nats-server 2.15.1 by tests in tests/broker:

* Users are ``{nkey: "U..."}`` entries in the top-level ``authorization`` list, with
  their permissions. Users in ``leafnodes { authorization { users } }`` cannot carry
  permissions (the parser is a trimmed-down user parser), so HQ leaves that block
  out: leaf connections then authenticate against the top-level users, whose
  permissions *are* enforced on the leaf link.
* A leaf remote authenticates with ``nkey: "SU..."``, the *seed*, inline: it has no
  seed-file option (``credentials`` wants a user JWT, i.e. operator mode), and
  ``include`` joins even an absolute path to the conf's directory (measured:
  ``include "/a/seed.conf"`` opens ``<confdir>/a/seed.conf``). So the one secret in
  a till's conf is its own seed; the file is 0600 like the seed files. An HQ conf
  holds public keys only.
* ``leafnodes { reconnect: "1s" }`` is the retry interval of leaf remotes, which
  are retried forever. A bare integer (seconds) still parses but ``nats-server -t``
  flags it ("should be converted to a duration"), so we render a duration string.
  We use 1 s so a healed WAN is picked up quickly (measured: leaf back ~1 s after
  HQ restarts).
* Routes authenticate by mutual TLS: ``cluster { tls { verify: true } }``; the
  same certificate is served and presented when dialling, and the dialler checks
  the peer's certificate against the host in the route URL (a certificate with
  only a DNS name, dialled by IP: "doesn't contain any IP SANs", no route). The
  server demands a client certificate on routes even without ``verify`` (measured:
  with it off, an impostor-signed peer is still refused, "unknown authority"); we
  render it anyway so the conf says what the server does.
* ``tls {}`` file paths are resolved against the server's working directory, not
  the conf file's, so they must be absolute here.
* A route listener with TLS says nothing before the handshake; a leaf listener
  sends INFO with ``tls_required`` in the clear first. Either drops a peer whose
  handshake fails, which never shows up in ``/routez`` or ``/leafz``. A leaf remote
  without a ``tls {}`` block still upgrades when the hub requires TLS, trusting the
  system CAs, so it fails on the site CA's certificate ("unknown authority").
* Port 0 (ephemeral) cannot be used for cluster/leaf ports that peers must dial,
  hence `free_port()`.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import ConfigError, IdentityError, InvalidReplicaId
from broker.identity import Nkey, check_public_key
from broker.permissions import Permissions, leaf_permissions, permissions_for
from broker.subjects import HQ, parse_replica_id, validate_name
from broker.tls import TlsFiles

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "LINK_PING",
    "ClusterSpec",
    "LeafRemoteSpec",
    "NkeyUserSpec",
    "Ping",
    "ServerConfig",
    "TlsSpec",
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
class NkeyUserSpec:
    """A user known by its public nkey only (``U...``); it proves itself by signing."""

    public_key: str
    permissions: Permissions | None = None
    # e.g. ("LEAFNODE",): the identity may not be used for any other kind of connection.
    connection_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class TlsSpec:
    """One ``tls {}`` block. ``verify`` demands a client certificate signed by the CA
    (mutual TLS); ``timeout`` is the handshake timeout in seconds (server default if None).
    """

    files: TlsFiles
    verify: bool = False
    timeout: float | None = None


@dataclass(frozen=True)
class ClusterSpec:
    name: str
    port: int
    routes: tuple[str, ...] = ()  # "host:port" of the peers' cluster listeners
    host: str = "127.0.0.1"
    tls: TlsSpec | None = None  # with verify=True: routes authenticate by certificate


@dataclass(frozen=True)
class LeafRemoteSpec:
    urls: tuple[str, ...]  # "host:port" of the hub's leafnode listeners
    disabled: bool = False  # nats-server >= 2.12: a reload with this set drops the link
    nkey: Nkey | None = None  # the leaf identity; rendered as its seed (see module doc)
    tls: TlsSpec | None = None  # trust the CA; present cert_file if the hub verifies
    # Try the URLs in the order given (nats-server shuffles them otherwise): the
    # preferred uplink first. After a failure the server moves on to the next URL
    # and does not come back by itself (README, "Deploying a store": failing back).
    in_order: bool = False


@dataclass(frozen=True)
class Ping:
    """How fast a server notices a dead peer (route, leaf, client): it pings every
    `interval_s` and drops the link after `max_out` unanswered pings."""

    interval_s: float
    max_out: int


# A store's link to HQ or a till's route to a peer found dead within ~3 s (vs nats-
# server's 2 min x 2 default), so a leaf moves to the LTE uplink in seconds. The cost
# is one tiny PING frame per second per link.
LINK_PING = Ping(interval_s=1.0, max_out=2)


@dataclass(frozen=True)
class ServerConfig:
    name: str
    port: int
    host: str = "127.0.0.1"
    http_port: int | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    users: tuple[NkeyUserSpec, ...] = ()
    cluster: ClusterSpec | None = None
    leaf_port: int | None = None  # accept leaf connections (hub side)
    leaf_host: str | None = None  # where the leaf listener binds (`host` if None)
    leaf_tls: TlsSpec | None = None  # TLS on the leaf listener (hub side)
    tls: TlsSpec | None = None  # TLS on the client port
    leaf_remotes: tuple[LeafRemoteSpec, ...] = ()
    leaf_reconnect_seconds: float = 1.0
    ping: Ping | None = None  # the server's pings on every connection (default: 2 min x 2)
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
    if isinstance(value, float):
        return repr(value)  # finite and in range: _validate checks the only float fields
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


def _user_entry(spec: NkeyUserSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"nkey": spec.public_key}
    if spec.connection_types:
        entry["allowed_connection_types"] = list(spec.connection_types)
    if spec.permissions is not None:
        entry["permissions"] = spec.permissions
    return entry


def _tls_block(spec: TlsSpec, where: str, *, listener: bool) -> dict[str, Any]:
    files = spec.files
    if listener and (files.cert_file is None or files.key_file is None):
        raise ConfigError(where, "a TLS listener needs cert_file and key_file")
    if (files.cert_file is None) != (files.key_file is None):
        raise ConfigError(where, "cert_file and key_file go together")
    block: dict[str, Any] = {}
    for key in ("cert_file", "key_file", "ca_file"):
        path = getattr(files, key)
        if path is None:
            continue
        if not path.is_absolute():
            # nats-server reads these relative to its working directory, not the conf's.
            raise ConfigError(f"{where}.{key}", f"{path} must be an absolute path")
        block[key] = str(path)
    if spec.verify:
        block["verify"] = True
    if spec.timeout is not None:
        block["timeout"] = spec.timeout
    return block


def _cluster_block(c: ClusterSpec) -> dict[str, Any]:
    block: dict[str, Any] = {"name": c.name, "listen": f"{c.host}:{c.port}"}
    if c.tls is not None:
        block["tls"] = _tls_block(c.tls, "cluster.tls", listener=True)
    block["routes"] = [f"nats-route://{r}" for r in c.routes]
    return block


def _leaf_block(cfg: ServerConfig) -> dict[str, Any]:
    block: dict[str, Any] = {}
    if cfg.leaf_port is not None:
        block["listen"] = f"{cfg.leaf_host or cfg.host}:{cfg.leaf_port}"
        if cfg.leaf_tls is not None:
            block["tls"] = _tls_block(cfg.leaf_tls, "leaf_tls", listener=True)
    if cfg.leaf_remotes:
        block["reconnect"] = f"{round(cfg.leaf_reconnect_seconds * 1000)}ms"
        block["remotes"] = [_remote_entry(r) for r in cfg.leaf_remotes]
    return block


def _remote_entry(remote: LeafRemoteSpec) -> dict[str, Any]:
    entry: dict[str, Any] = {"urls": [f"nats-leaf://{u}" for u in remote.urls]}
    if remote.nkey is not None:
        entry["nkey"] = remote.nkey.seed
    if remote.tls is not None:
        entry["tls"] = _tls_block(remote.tls, "leaf_remotes.tls", listener=False)
    if remote.in_order:
        entry["dont_randomize"] = True
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
    if cfg.ping is not None and not (0.1 <= cfg.ping.interval_s <= 3600 and cfg.ping.max_out >= 1):
        raise ConfigError("ping", "interval between 0.1 s and 1 h, at least 1 ping out")
    _validate_identity(cfg)


def _validate_identity(cfg: ServerConfig) -> None:
    """Public keys well-formed, TLS timeouts sane: mistakes found here, not at connect."""
    for user in cfg.users:
        try:
            check_public_key(user.public_key)
        except IdentityError as e:
            raise ConfigError("users.nkey", e.reason) from None
    specs = {
        "tls": cfg.tls,
        "leaf_tls": cfg.leaf_tls,
        "cluster.tls": None if cfg.cluster is None else cfg.cluster.tls,
    }
    specs.update({f"leaf_remotes[{i}].tls": r.tls for i, r in enumerate(cfg.leaf_remotes)})
    for name, spec in specs.items():
        if spec is not None and spec.timeout is not None and not 0.01 <= spec.timeout <= 60:
            raise ConfigError(f"{name}.timeout", "must be between 0.01 s and 60 s")


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
    if cfg.ping is not None:
        top["ping_interval"] = f"{round(cfg.ping.interval_s * 1000)}ms"
        top["ping_max"] = cfg.ping.max_out
    if cfg.tls is not None:
        top["tls"] = _tls_block(cfg.tls, "tls", listener=True)
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

# A till's key is a client on its store's servers and a leaf at HQ, never the other way:
# its seed, inline in its conf for the leaf link, cannot log in to HQ as a client.
_CLIENT_ONLY = ("STANDARD",)
_LEAF_ONLY = ("LEAFNODE",)


def _need_key(keys: Mapping[str, str], key: str) -> str:
    try:
        return keys[key]
    except KeyError:
        raise ConfigError("public keys", f"missing entry {key!r}") from None


def _store_users(store: str, keys: Mapping[str, str]) -> tuple[NkeyUserSpec, ...]:
    return tuple(
        NkeyUserSpec(pub, permissions_for(key, store), _CLIENT_ONLY)
        for key, pub in sorted(keys.items())
        if "/" in key and parse_replica_id(key).store == store
    )


def till_server_config(
    store: str,
    till: str,
    public_keys: Mapping[str, str],
    tls: TlsFiles,
    *,
    port: int,
    cluster_port: int,
    peer_cluster_addrs: Sequence[str] = (),
    hq_leaf_addrs: Sequence[str] = (),
    leaf_nkey: Nkey | None = None,
    client_tls: bool = False,
    http_port: int | None = None,
    host: str = "127.0.0.1",
    network_host: str | None = None,
    route_tls: TlsFiles | None = None,
) -> ServerConfig:
    """A till's server: its store's tills as users, routes over mutual TLS, a leaf link
    to HQ as itself.

    ``public_keys`` maps replica ids to public nkeys; every till of ``store`` gets
    a user with its `permissions_for`. ``tls`` is this machine's certificate
    (issued for the address its peers dial) and the site CA: routes use it both
    ways with ``verify`` (mutual TLS), the leaf remote presents it to HQ.
    ``leaf_nkey`` (the till's own nkey: HQ knows it as a leaf user of its store) is
    required with ``hq_leaf_addrs``, which are tried in the order given (WAN before
    LTE; see `LeafRemoteSpec.in_order`). ``host`` is where clients and monitoring
    listen (loopback: only this machine's own processes use them), ``network_host``
    where the routes do (the machine's LAN address; ``host`` if not given).
    ``client_tls`` also puts TLS on the client port (clients then need the CA).
    """
    rid = parse_replica_id(f"{store}/{till}")
    cluster = ClusterSpec(
        name=f"store-{store}",
        port=cluster_port,
        routes=tuple(peer_cluster_addrs),
        host=network_host or host,
        tls=TlsSpec(route_tls or tls, verify=True),
    )
    remotes: tuple[LeafRemoteSpec, ...] = ()
    if hq_leaf_addrs:
        if leaf_nkey is None:
            raise ConfigError("leaf_nkey", f"the leaf link of {rid.token} needs its nkey")
        remotes = (
            LeafRemoteSpec(tuple(hq_leaf_addrs), nkey=leaf_nkey, tls=TlsSpec(tls), in_order=True),
        )
    return ServerConfig(
        name=f"{rid.store}-{rid.till}",
        port=port,
        host=host,
        http_port=http_port,
        users=_store_users(store, public_keys),
        cluster=cluster,
        leaf_remotes=remotes,
        tls=TlsSpec(tls) if client_tls else None,
        ping=LINK_PING,
    )


def hq_server_config(
    public_keys: Mapping[str, str],
    stores: Sequence[str],
    tls: TlsFiles,
    *,
    port: int,
    leaf_port: int,
    name: str = HQ,
    cluster_port: int | None = None,
    peer_cluster_addrs: Sequence[str] = (),
    client_tls: bool = False,
    http_port: int | None = None,
    host: str = "127.0.0.1",
    network_host: str | None = None,
    route_tls: TlsFiles | None = None,
    leaf_host: str | None = None,
) -> ServerConfig:
    """An HQ hub node: public keys only, TLS on the leaf listener.

    ``public_keys`` needs ``hq`` and every till of ``stores``: each till is a leaf user
    with its own `leaf_permissions`, for leaf connections only. The leaf listener
    demands a certificate from the site CA as well as the till's nkey: a leaked seed
    alone does not get a foreign machine in. A multi-node HQ routes over mutual TLS
    like a store, with ``route_tls`` from HQ's route CA. ``host``/``network_host`` as for
    `till_server_config`; the leaf listener is on ``leaf_host`` (``network_host`` if not
    given: every address, when stores reach the node at several).
    """
    users = [NkeyUserSpec(_need_key(public_keys, HQ), permissions_for(HQ), _CLIENT_ONLY)]
    for store in stores:
        _check_store_has_tills(store, public_keys)
        users += [
            NkeyUserSpec(pub, leaf_permissions(key), _LEAF_ONLY)
            for key, pub in sorted(public_keys.items())
            if "/" in key and parse_replica_id(key).store == store
        ]
    cluster = None
    if cluster_port is not None:
        cluster = ClusterSpec(
            name="hq",
            port=cluster_port,
            routes=tuple(peer_cluster_addrs),
            host=network_host or host,
            tls=TlsSpec(route_tls or tls, verify=True),
        )
    return ServerConfig(
        name=name,
        port=port,
        host=host,
        leaf_host=leaf_host or network_host,
        http_port=http_port,
        users=tuple(users),
        cluster=cluster,
        leaf_port=leaf_port,
        leaf_tls=TlsSpec(tls, verify=True),
        tls=TlsSpec(tls) if client_tls else None,
        ping=LINK_PING,
    )


def _check_store_has_tills(store: str, public_keys: Mapping[str, str]) -> None:
    if not any("/" in k and parse_replica_id(k).store == store for k in public_keys):
        raise ConfigError("public keys", f"no till of store {store!r}: its leaf could not log in")
