"""Shared helpers for the broker tests: bounded waits and topology builders.

Every wait here is a poll loop with a deadline, never a bare sleep used as
synchronisation; a timeout fails the test with a message saying what never
happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import (
    ServerConfig,
    free_port,
    hq_server_config,
    till_server_config,
)
from broker.identity import Nkey, generate_store_nkeys, public_keys
from broker.server import EmbeddedNatsServer, connect_options
from broker.tls import SiteCA, TlsFiles, write_tls_files

__all__ = [
    "Collector",
    "ServerPool",
    "Site",
    "connect_replica",
    "connect_seed",
    "hq_config",
    "store_configs",
    "wait_until",
]

POLL = 0.05


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0
) -> float:
    """Poll ``predicate`` until true; return the seconds it took or fail the test."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return time.monotonic() - start
        await asyncio.sleep(POLL)
    raise AssertionError(f"timed out after {timeout}s waiting for: {what}")


class Collector:
    """Subscription callback that records (subject, data) in arrival order."""

    def __init__(self) -> None:
        self.msgs: list[tuple[str, bytes]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.msgs.append((msg.subject, msg.data))

    def count(self, subject: str, data: bytes | None = None) -> int:
        return sum(1 for s, d in self.msgs if s == subject and (data is None or d == data))

    async def wait_for(self, subject: str, data: bytes, timeout: float = 10.0) -> None:
        async def seen() -> bool:
            return self.count(subject, data) > 0

        await wait_until(seen, f"{data!r} on {subject}", timeout)


class ServerPool:
    """Starts servers for one test and stops every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.servers: list[EmbeddedNatsServer] = []
        self.pids: list[int] = []

    async def start(self, config: ServerConfig) -> EmbeddedNatsServer:
        srv = EmbeddedNatsServer(config, self.workdir)
        self.servers.append(srv)
        await srv.start()
        self.pids.append(srv.pid)
        return srv

    async def stop_all(self) -> None:
        for srv in reversed(self.servers):
            await srv.stop()


@dataclass
class Site:
    """A site on disk: a CA, nkeys for store s1 (t1..t3), store s2 (x) and HQ, their
    seed files, and machine certificates for 127.0.0.1 on demand."""

    root: Path
    ca: SiteCA = field(init=False)
    keys: dict[str, Nkey] = field(init=False)

    def __post_init__(self) -> None:
        self.ca = SiteCA.generate("test")
        self.keys = generate_store_nkeys("s1", ["t1", "t2", "t3"], hq=True)
        self.keys.update(generate_store_nkeys("s2", ["x"], hq=False))

    @property
    def public(self) -> dict[str, str]:
        return public_keys(self.keys)

    def seed_file(self, key: str, nkey: Nkey | None = None) -> Path:
        """``key``'s seed written to a 0600 file (or ``nkey``'s, for a stranger)."""
        path = self.root / "seeds" / (key.replace("/", "-").replace(":", "-") + ".nk")
        path.parent.mkdir(parents=True, exist_ok=True)
        (nkey or self.keys[key]).save_seed(path)
        return path

    def machine(self, name: str, ca: SiteCA | None = None) -> TlsFiles:
        """TLS files of machine ``name`` at 127.0.0.1, trusting the site CA: a
        certificate from ``ca``, the site CA unless a test plays an impostor."""
        issued = (ca or self.ca).issue_server(name, ips=["127.0.0.1"], dns=["localhost"])
        return write_tls_files(self.root / "tls" / name, self.ca.cert, issued)

    def client_tls(self) -> TlsFiles:
        return write_tls_files(self.root / "tls" / "client", self.ca.cert)


async def connect_seed(
    srv: EmbeddedNatsServer,
    seed_file: Path,
    replica_id: str,
    errors: list[Exception] | None = None,
    tls: TlsFiles | None = None,
) -> Client:
    """A client of ``srv`` as ``replica_id`` (its name and inbox), signing with the seed
    in ``seed_file``; its errors (e.g. permissions violations) go to ``errors``."""

    async def on_error(e: Exception) -> None:
        if errors is not None:
            errors.append(e)

    opts = connect_options(srv.client_url, seed_file, replica_id, tls)
    return await nats.connect(**opts, error_cb=on_error, connect_timeout=2)


async def connect_replica(
    srv: EmbeddedNatsServer,
    site: Site,
    replica_id: str,
    errors: list[Exception] | None = None,
    tls: TlsFiles | None = None,
) -> Client:
    """A client of ``srv`` with ``replica_id``'s own identity from ``site``."""
    return await connect_seed(srv, site.seed_file(replica_id), replica_id, errors, tls)


def hq_config(site: Site, stores: Sequence[str] = ("s1", "s2")) -> ServerConfig:
    tls = site.machine("hq")
    return hq_server_config(site.public, stores, tls, port=free_port(), leaf_port=free_port())


def store_configs(
    site: Site,
    store: str,
    tills: Sequence[str],
    hq_leaf_addrs: Sequence[str] = (),
    client_tls: bool = False,
) -> list[ServerConfig]:
    """Configs for a fully meshed store cluster (each till routes to all others) over
    mutual TLS, each till with a TLS leaf link to ``hq_leaf_addrs`` if given."""
    cports = [free_port() for _ in tills]
    return [
        till_server_config(
            store,
            till,
            site.public,
            site.machine(f"{store}-{till}"),
            port=free_port(),
            cluster_port=cports[i],
            peer_cluster_addrs=[f"127.0.0.1:{p}" for j, p in enumerate(cports) if j != i],
            hq_leaf_addrs=hq_leaf_addrs,
            leaf_nkey=site.keys[f"{store}/{till}"] if hq_leaf_addrs else None,
            client_tls=client_tls,
        )
        for i, till in enumerate(tills)
    ]


async def routed_peers(srv: EmbeddedNatsServer) -> set[str]:
    """Names of the servers ``srv`` has a route to (route pooling opens several)."""
    routez = await srv.monitor("/routez")
    return {r.get("remote_name", "") for r in routez.get("routes") or []}


async def wait_full_mesh(servers: Sequence[EmbeddedNatsServer], timeout: float = 10.0) -> None:
    names = {s.name for s in servers}

    async def meshed() -> bool:
        for s in servers:
            if await routed_peers(s) != names - {s.name}:
                return False
        return True

    await wait_until(meshed, f"full route mesh among {sorted(names)}", timeout)


async def wait_leafs(hub: EmbeddedNatsServer, count: int, timeout: float = 10.0) -> float:
    async def connected() -> bool:
        try:
            return int((await hub.monitor("/leafz"))["leafnodes"]) == count
        except OSError:
            return False

    return await wait_until(connected, f"{count} leaf connections on {hub.name}", timeout)


async def probe_until_seen(
    pub: Client, subject: str, sink: Collector, timeout: float = 10.0
) -> None:
    """Publish numbered probes until one arrives: interest propagates asynchronously
    over routes and leaf links, so one publish right after subscribing may be lost."""
    n = 0

    async def arrived() -> bool:
        nonlocal n
        if any(s == subject and d.startswith(b"probe") for s, d in sink.msgs):
            return True
        n += 1
        await pub.publish(subject, b"probe%d" % n)
        await pub.flush()
        return False

    await wait_until(arrived, f"a probe on {subject}", timeout)
