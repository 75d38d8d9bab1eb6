"""A site: which stores and tills exist, where each listens, and their credentials.

`tillmesh site init` writes `site.json` (ports, policies) and `credentials.json`
(mode 0600) into a data folder; every replica process of that site reads both.
Pydantic validates them, since they are edited by people.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

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

__all__ = ["NodePorts", "Site", "init_site", "load_site"]

SITE_FILE = "site.json"
CREDENTIALS_FILE = "credentials.json"


class NodePorts(BaseModel):
    nats: int = Field(gt=0, lt=65536)
    cluster: int | None = Field(default=None, gt=0, lt=65536)  # tills: store cluster routes
    leaf: int | None = Field(default=None, gt=0, lt=65536)  # HQ: where stores connect
    monitor: int = Field(gt=0, lt=65536)  # nats-server HTTP monitoring (readiness)
    api: int = Field(gt=0, lt=65536)  # tillmesh HTTP API and till page


class Site(BaseModel):
    host: str = "127.0.0.1"
    stores: dict[str, list[str]]
    ports: dict[str, NodePorts]
    price_policy: Literal["latest", "hq_wins", "lowest"] = "hq_wins"
    max_clock_offset_ms: int = Field(default=60_000, gt=0)
    extra_hq_leaf_urls: list[str] = []  # more HQ hub nodes (deploy/nats/hq-cluster-*.conf)

    @field_validator("stores")
    @classmethod
    def _names(cls, stores: dict[str, list[str]]) -> dict[str, list[str]]:
        for store, tills in stores.items():
            validate_name(store, "store")
            for till in tills:
                validate_name(till, "till")
        return stores

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
        return f"http://{self.host}:{self.node(replica_id).api}"

    def hq_leaf_addrs(self) -> list[str]:
        leaf = self.ports[HQ].leaf
        return [f"{self.host}:{leaf}", *self.extra_hq_leaf_urls]

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
                host=self.host,
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
            host=self.host,
        )

    def _peer_routes(self, store: str, me: str) -> list[str]:
        return [
            f"{self.host}:{self.ports[f'{store}/{t}'].cluster}"
            for t in self.stores[store]
            if f"{store}/{t}" != me
        ]


def init_site(
    root: Path, stores: dict[str, list[str]], *, host: str = "127.0.0.1", force: bool = False
) -> Site:
    """Allocate free ports and fresh credentials for every replica of a new site.

    Refuses (SiteExists) to replace a site unless `force`; OS errors (an unwritable
    folder) become StorageError naming the folder.
    """
    try:
        if not force and (root / SITE_FILE).exists():
            raise SiteExists(root / SITE_FILE)
        site, creds = _new_site(stores, host)
        _write_site(root, site, creds)
    except OSError as e:
        raise StorageError(str(root), f"cannot write a site here: {e.strerror or e}") from e
    return site


def _new_site(stores: dict[str, list[str]], host: str) -> tuple[Site, dict[str, Credentials]]:
    ports = {HQ: _ports(host, hq=True)}
    for store, tills in stores.items():
        for till in tills:
            ports[f"{store}/{till}"] = _ports(host, hq=False)
    creds: dict[str, Credentials] = {}
    for store, tills in stores.items():
        creds.update(generate_store_credentials(store, tills, hq=True))
    return Site(host=host, stores=stores, ports=ports), creds


def _write_site(root: Path, site: Site, creds: dict[str, Credentials]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / SITE_FILE).write_text(site.model_dump_json(indent=2) + "\n")
    save_credentials(root / CREDENTIALS_FILE, creds)


def _ports(host: str, *, hq: bool) -> NodePorts:
    return NodePorts(
        nats=free_port(host),
        cluster=None if hq else free_port(host),
        leaf=free_port(host) if hq else None,
        monitor=free_port(host),
        api=free_port(host),
    )


def load_site(root: Path) -> tuple[Site, dict[str, Credentials]]:
    path = root / SITE_FILE
    if not path.exists():
        raise StorageError(str(path), "no site here; create one with `tillmesh site init`")
    site = Site.model_validate_json(path.read_text())
    return site, load_credentials(root / CREDENTIALS_FILE)
