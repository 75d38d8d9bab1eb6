"""A site: which stores and tills exist, where each listens, and their credentials.

`tillmesh site init` writes `site.json` (addresses, ports, policies) and
`credentials.json` (mode 0600) into a data folder; every replica process of that site
reads both. Pydantic validates them, since they are edited by people.

Where replicas run: each has an address (`hosts`, else the site's default `host`). A
replica alone on its address (a till on its own machine) uses the standard ports
(`STANDARD_PORTS`), so a store's machines need no port juggling. Replicas sharing an
address get free ports when it is this machine's (the one-machine layout of the demo
and tests: loopback), else the standard ports + 10 for the second one, + 20 for the
third. Addresses come from `site init --host` or a site file (`layout.py`).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from broker.config import ServerConfig, free_port, hq_server_config, till_server_config
from broker.credentials import (
    Credentials,
    generate_store_credentials,
    load_credentials,
    save_credentials,
)
from broker.subjects import HQ, parse_replica_id, validate_name
from core.errors import StorageError
from replicas.errors import SiteExists, UnknownReplica

__all__ = [
    "STANDARD_PORTS",
    "NodePorts",
    "Site",
    "check_address",
    "init_site",
    "is_loopback",
    "load_site",
]

SITE_FILE = "site.json"
CREDENTIALS_FILE = "credentials.json"


class NodePorts(BaseModel):
    """Where one replica listens; see `STANDARD_PORTS` for a replica on its own machine."""

    nats: int = Field(gt=0, lt=65536)
    cluster: int | None = Field(default=None, gt=0, lt=65536)  # tills: store cluster routes
    leaf: int | None = Field(default=None, gt=0, lt=65536)  # HQ: where stores connect
    monitor: int = Field(gt=0, lt=65536)  # nats-server HTTP monitoring (readiness)
    api: int = Field(gt=0, lt=65536)  # tillmesh HTTP API and till page


# nats-server's own defaults for client, route, leaf and monitoring ports, and the API's.
STANDARD_PORTS = {"nats": 4222, "cluster": 6222, "leaf": 7422, "monitor": 8222, "api": 8080}


class Site(BaseModel):
    host: str = "127.0.0.1"  # the address of replicas `hosts` does not name
    hosts: dict[str, str] = {}  # replica id -> the address of its machine
    stores: dict[str, list[str]]
    ports: dict[str, NodePorts]
    price_policy: Literal["latest", "hq_wins", "lowest"] = "hq_wins"
    max_clock_offset_ms: int = Field(default=60_000, gt=0)
    # What a cashier's API token may do alone (replicas.api.auth.CashierLimits).
    cashier_discount_limit_bp: int = Field(default=1000, ge=0, le=10_000)
    cashier_void_within_s: int = Field(default=900, ge=0)
    extra_hq_leaf_urls: list[str] = []  # more HQ hub nodes (deploy/nats/hq-cluster-*.conf)

    @field_validator("stores")
    @classmethod
    def _names(cls, stores: dict[str, list[str]]) -> dict[str, list[str]]:
        for store, tills in stores.items():
            validate_name(store, "store")
            for till in tills:
                validate_name(till, "till")
        return stores

    @model_validator(mode="after")
    def _known_hosts(self) -> Site:
        unknown = sorted(set(self.hosts) - set(self.replicas))
        if unknown:
            raise ValueError(f"hosts names replicas the site does not have: {unknown}")
        for rid, address in self.hosts.items():
            check_address(address, rid)
        return self

    def host_of(self, replica_id: str) -> str:
        """The address `replica_id` listens on (and its peers dial)."""
        return self.hosts.get(replica_id, self.host)

    @property
    def replicas(self) -> list[str]:
        return [HQ] + [f"{s}/{t}" for s, tills in self.stores.items() for t in tills]

    def node(self, replica_id: str) -> NodePorts:
        """The ports of one of the site's replicas; UnknownReplica for any other id."""
        if replica_id not in self.ports or replica_id not in self.replicas:
            raise UnknownReplica(replica_id, self.replicas)
        return self.ports[replica_id]

    def data_dir(self, root: Path, replica_id: str) -> Path:
        self.node(replica_id)  # an unknown id must not become a folder
        return root / replica_id  # "hq" or "<store>/<till>"

    def api_url(self, replica_id: str) -> str:
        return f"http://{_url_host(self.host_of(replica_id))}:{self.node(replica_id).api}"

    def hq_leaf_addrs(self) -> list[str]:
        leaf = self.ports[HQ].leaf
        return [f"{_url_host(self.host_of(HQ))}:{leaf}", *self.extra_hq_leaf_urls]

    def server_config(self, replica_id: str, creds: dict[str, Credentials]) -> ServerConfig:
        ports = self.node(replica_id)
        if replica_id == HQ:
            assert ports.leaf is not None
            return hq_server_config(
                creds,
                list(self.stores),
                port=ports.nats,
                leaf_port=ports.leaf,
                http_port=ports.monitor,
                host=self.host_of(HQ),
            )
        rid = parse_replica_id(replica_id)
        assert rid.store is not None and rid.till is not None and ports.cluster is not None
        return till_server_config(
            rid.store,
            rid.till,
            creds,
            port=ports.nats,
            cluster_port=ports.cluster,
            peer_cluster_addrs=self._peer_routes(rid.store, replica_id),
            hq_leaf_addrs=self.hq_leaf_addrs(),
            http_port=ports.monitor,
            host=self.host_of(replica_id),
        )

    def _peer_routes(self, store: str, me: str) -> list[str]:
        return [
            f"{_url_host(self.host_of(f'{store}/{t}'))}:{self.ports[f'{store}/{t}'].cluster}"
            for t in self.stores[store]
            if f"{store}/{t}" != me
        ]


def init_site(
    root: Path,
    stores: dict[str, list[str]],
    *,
    host: str = "127.0.0.1",
    hosts: Mapping[str, str] | None = None,
    force: bool = False,
) -> Site:
    """Ports and fresh credentials for every replica of a new site: the standard ports
    for a replica alone on its address, free ones for replicas sharing one.

    Refuses (SiteExists) to replace a site unless `force`; OS errors (an unwritable
    folder) become StorageError naming the folder.
    """
    try:
        if not force and (root / SITE_FILE).exists():
            raise SiteExists(root / SITE_FILE)
        site, creds = _new_site(stores, host, dict(hosts or {}))
        _write_site(root, site, creds)
    except OSError as e:
        raise StorageError(str(root), f"cannot write a site here: {e.strerror or e}") from e
    return site


def _new_site(
    stores: dict[str, list[str]], host: str, hosts: dict[str, str]
) -> tuple[Site, dict[str, Credentials]]:
    # Validated before any port is taken: a typo in an address is a clear error.
    site = Site(host=host, hosts=hosts, stores=stores, ports={})
    sharing = Counter(site.host_of(rid) for rid in site.replicas)
    seen: Counter[str] = Counter()
    for rid in site.replicas:
        address = site.host_of(rid)
        if sharing[address] > 1 and is_loopback(address):  # one machine: ask the OS
            site.ports[rid] = _free_ports(address, hq=rid == HQ)
        else:  # the k-th replica on that machine: the standard ports + 10 k
            site.ports[rid] = _standard_ports(hq=rid == HQ, offset=10 * seen[address])
        seen[address] += 1
    creds: dict[str, Credentials] = {}
    for store, tills in stores.items():
        creds.update(generate_store_credentials(store, tills, hq=True))
    return site, creds


def _write_site(root: Path, site: Site, creds: dict[str, Credentials]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / SITE_FILE).write_text(site.model_dump_json(indent=2) + "\n")
    save_credentials(root / CREDENTIALS_FILE, creds)


def _standard_ports(*, hq: bool, offset: int) -> NodePorts:
    port = {name: number + offset for name, number in STANDARD_PORTS.items()}
    return NodePorts(
        nats=port["nats"],
        cluster=None if hq else port["cluster"],
        leaf=port["leaf"] if hq else None,
        monitor=port["monitor"],
        api=port["api"],
    )


def _free_ports(host: str, *, hq: bool) -> NodePorts:
    return NodePorts(
        nats=free_port(host),
        cluster=None if hq else free_port(host),
        leaf=free_port(host) if hq else None,
        monitor=free_port(host),
        api=free_port(host),
    )


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_address(address: str, what: str) -> str:
    """An IP address or a DNS name, else ValueError naming `what`."""
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    if not _DNS_NAME.fullmatch(address) or re.fullmatch(r"[0-9.]+", address):  # 10.0.1.300
        raise ValueError(f"{what}: {address!r} is neither an IP address nor a host name")
    return address


_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # fmt: skip


def _url_host(address: str) -> str:
    """An address as it stands in a URL or host:port (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def load_site(root: Path) -> tuple[Site, dict[str, Credentials]]:
    path = root / SITE_FILE
    if not path.exists():
        raise StorageError(str(path), "no site here; create one with `tillmesh site init`")
    site = Site.model_validate_json(path.read_text())
    return site, load_credentials(root / CREDENTIALS_FILE)
