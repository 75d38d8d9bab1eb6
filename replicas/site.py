"""A site: which stores and tills exist, where each listens, and who they are.

`tillmesh site init` writes `site.json` (addresses, ports, policies, every replica's
public nkey) and each machine's identity folder (`broker.keyring`: its certificate
from the site CA, its seed) into a data folder. `site.json` holds nothing secret;
every machine of the site holds it, and its own identity alone (`tillmesh site bundle`).
Pydantic validates it, since people edit it.

Machines ("nodes") run a nats-server each: every till, and HQ's hub nodes. The first
hub node is `hq`, where the HQ replica runs; more (`hq_nodes`, e.g. `hq2`, `hq3`) make
HQ's hub a cluster that stores reach on any node. A store's leaf link lists every hub
node on the WAN first, then over each backup uplink (`uplinks`: the addresses the hub
nodes have over, e.g., the LTE router), and moves down that list when a link dies.

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
import ssl
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from broker.config import (
    ServerConfig,
    free_port,
    hq_server_config,
    till_server_config,
)
from broker.keyring import (
    IDENTITY_DIR,
    NodeIdentity,
    issue_identity,
    make_route_ca,
    make_site_ca,
)
from broker.subjects import HQ, parse_replica_id, validate_name
from core.errors import StorageError
from core.signing import (
    KeyRegistry,
    decode_public_key,
)
from replicas.errors import SiteExists, SiteFileError, UnknownReplica
from replicas.keyfiles import write_signing_key

__all__ = [
    "STANDARD_PORTS",
    "NodePorts",
    "Site",
    "add_signing_keys",
    "check_address",
    "init_site",
    "is_loopback",
    "load_site",
    "save_site",
]

SITE_FILE = "site.json"
CLIENT_HOST = "127.0.0.1"  # client and monitoring ports: the machine's own processes only
ANY_ADDRESS = "0.0.0.0"  # a hub node reached at several addresses listens on all


class NodePorts(BaseModel):
    """Where one replica listens; see `STANDARD_PORTS` for a replica on its own machine."""

    nats: int = Field(gt=0, lt=65536)  # on loopback: the replica's own client
    cluster: int | None = Field(default=None, gt=0, lt=65536)  # store (or HQ hub) routes
    leaf: int | None = Field(default=None, gt=0, lt=65536)  # HQ: where stores connect
    monitor: int = Field(gt=0, lt=65536)  # nats-server HTTP monitoring, on loopback
    api: int = Field(gt=0, lt=65536)  # tillmesh HTTP API and till page


# nats-server's own defaults for client, route, leaf and monitoring ports, and the API's.
STANDARD_PORTS = {"nats": 4222, "cluster": 6222, "leaf": 7422, "monitor": 8222, "api": 8080}


class Site(BaseModel):
    host: str = "127.0.0.1"  # the address of nodes `hosts` does not name
    hosts: dict[str, str] = {}  # node (replica id or hub node) -> the address of its machine
    stores: dict[str, list[str]]
    hq_nodes: list[str] = []  # HQ hub nodes besides `hq`, e.g. ["hq2", "hq3"]
    # Backup uplinks, in order: name -> hub node -> its address over that uplink.
    uplinks: dict[str, dict[str, str]] = {}
    ports: dict[str, NodePorts]
    public_keys: dict[str, str] = {}  # replica id -> its public nkey (U...)
    # replica id -> the public key its events are signed with (core.signing, base64url)
    signing_keys: dict[str, str] = {}
    # Replicas that wrote events before the site had signing keys (`site keys --add`):
    # their unsigned events are taken until their log.signed checkpoint (core.keys).
    unsigned_history: list[str] = []
    price_policy: Literal["latest", "hq_wins", "lowest"] = "hq_wins"
    max_clock_offset_ms: int = Field(default=60_000, gt=0)
    # What a cashier's API token may do alone (replicas.api.auth.CashierLimits).
    cashier_discount_limit_bp: int = Field(default=1000, ge=0, le=10_000)
    cashier_void_within_s: int = Field(default=900, ge=0)
    # Do the catalog's prices include tax (EU shelves) or exclude it (US)? replicas.api.tax
    tax_mode: Literal["inclusive", "exclusive"] = "inclusive"
    store_names: dict[str, str] = {}  # store -> the name its receipts show (default: its id)
    # The card processor tills ask (replicas.payments.adapter.HttpAcquirer); None: none
    # reachable, every card payment is taken offline under the floor limits.
    acquirer_url: str | None = None
    acquirer_timeout_s: float = Field(default=3.0, gt=0, le=60)
    # Where each till's machine keeps the acquirer's API key (relative: to the site's
    # folder); the key itself never enters this file, which holds nothing secret.
    acquirer_key_file: str | None = None
    card_forward_every_s: float = Field(default=2.0, gt=0, le=3600)  # between forwarding rounds
    # A card authorisation asked this long ago with no sale stored (its till stopped
    # mid-sale) is reversed (`replicas.payments.asking`): longer than any sale takes
    card_resolve_after_s: float = Field(default=300.0, gt=0, le=86400)
    # Each replica's API (and till page) over HTTPS with its site certificate, which its
    # clients check against the site CA (`ca.pem`): API tokens and card tokens never
    # cross a store's LAN in clear. Off: plain HTTP, for an API on loopback only.
    api_tls: bool = False

    @field_validator("stores")
    @classmethod
    def _names(cls, stores: dict[str, list[str]]) -> dict[str, list[str]]:
        for store, tills in stores.items():
            for till in tills:
                parse_replica_id(f"{store}/{till}")  # the subject rules: no "hq" either
        return stores

    @field_validator("signing_keys")
    @classmethod
    def _keys(cls, keys: dict[str, str]) -> dict[str, str]:
        for rid, key in keys.items():
            try:
                decode_public_key(key)
            except ValueError as e:
                raise ValueError(f"signing key of {rid}: {e}") from None
        return keys

    @model_validator(mode="after")
    def _known_nodes(self) -> Site:
        for node in self.hq_nodes:
            validate_name(node, "HQ node")
            if node == HQ or node in self.stores:  # its folder would be a store's
                raise ValueError(f"HQ node {node!r}: the name of HQ or of a store")
        if len(set(self.hq_nodes)) != len(self.hq_nodes):
            raise ValueError(f"HQ nodes named twice: {self.hq_nodes}")
        unknown = sorted(set(self.hosts) - set(self.nodes))
        if unknown:
            raise ValueError(f"hosts names nodes the site does not have: {unknown}")
        for node, address in self.hosts.items():
            check_address(address, node)
        if strangers := sorted(set(self.store_names) - set(self.stores)):
            raise ValueError(f"store_names names stores the site does not have: {strangers}")
        for uplink, addresses in self.uplinks.items():
            validate_name(uplink, "uplink")
            if strangers := sorted(set(addresses) - set(self.hubs)):
                raise ValueError(f"uplink {uplink} names no HQ node {strangers}")
            for node, address in addresses.items():
                check_address(address, f"{uplink}:{node}")
        return self

    def host_of(self, node: str) -> str:
        """The address `node` listens on (and its peers dial)."""
        return self.hosts.get(node, self.host)

    @property
    def replicas(self) -> list[str]:
        return [HQ] + [f"{s}/{t}" for s, tills in self.stores.items() for t in tills]

    @property
    def hubs(self) -> list[str]:
        """HQ's hub nodes, `hq` (the HQ replica's machine) first."""
        return [HQ, *self.hq_nodes]

    @property
    def nodes(self) -> list[str]:
        """Every machine running a nats-server: the hub nodes, then the tills."""
        return [*self.hubs, *self.replicas[1:]]

    def node(self, node: str) -> NodePorts:
        """The ports of one of the site's nodes; UnknownReplica for any other id."""
        if node not in self.ports or node not in self.nodes:
            raise UnknownReplica(node, self.nodes)
        return self.ports[node]

    def data_dir(self, root: Path, node: str) -> Path:
        self.node(node)  # an unknown id must not become a folder
        return root / node  # "hq", "hq2" or "<store>/<till>"

    def identity_dir(self, root: Path, node: str) -> Path:
        return self.data_dir(root, node) / IDENTITY_DIR

    def api_url(self, replica_id: str) -> str:
        return self.api_url_at(self.host_of(replica_id), self.node(replica_id).api)

    def api_url_at(self, host: str, port: int) -> str:
        """The URL of an API of this site served at `host`:`port` (https with `api_tls`)."""
        return f"{'https' if self.api_tls else 'http'}://{_url_host(host)}:{port}"

    def api_verify(self, ca_file: Path) -> ssl.SSLContext | bool:
        """What a client of the site's APIs checks their certificates against: the site
        CA in `ca_file` (the site folder's, or a machine's identity folder's)."""
        return ssl.create_default_context(cafile=str(ca_file)) if self.api_tls else True

    def hq_leaf_addrs(self, till: str | None = None) -> list[str]:
        """Where `till`'s leaf link dials, in order: every hub node over the WAN, then over
        each backup uplink; each till of a store starts at another hub node, so a store's
        links spread over HQ's machines and losing one moves only some of them."""
        return [addr for _, _, addr in self.uplink_table(till)]

    def uplink_table(self, till: str | None = None) -> list[tuple[str, str, str]]:
        """(uplink, hub node, "host:port") for each leaf URL, in the order `till` tries
        them (the WAN first; within an uplink, hub nodes from the till's own first one)."""
        shift = self._till_index(till) % len(self.hubs)
        hubs = self.hubs[shift:] + self.hubs[:shift]
        table = [("wan", hub, self._leaf_addr(hub, self.host_of(hub))) for hub in hubs]
        for uplink, addresses in self.uplinks.items():
            table += [(uplink, h, self._leaf_addr(h, addresses[h])) for h in hubs if h in addresses]
        return table

    def _till_index(self, till: str | None) -> int:
        if till is None:
            return 0
        store, _, name = till.partition("/")
        return self.stores[store].index(name)

    def _leaf_addr(self, hub: str, address: str) -> str:
        return f"{_url_host(address)}:{self.ports[hub].leaf}"

    def server_config(self, node: str, identity: NodeIdentity) -> ServerConfig:
        """The nats-server `node` runs, with the identity installed on its machine."""
        ports = self.node(node)
        if node in self.hubs:
            return self._hub_config(node, ports, identity)
        rid = parse_replica_id(node)
        assert rid.store is not None and rid.till is not None and ports.cluster is not None
        return till_server_config(
            rid.store,
            rid.till,
            self.public_keys,
            identity.tls,
            port=ports.nats,
            cluster_port=ports.cluster,
            peer_cluster_addrs=self._peer_routes(rid.store, node),
            hq_leaf_addrs=self.hq_leaf_addrs(node),
            leaf_nkey=identity.nkey(),
            http_port=ports.monitor,
            host=self._client_host(node),
            network_host=self.host_of(node),
            route_tls=identity.route_tls,
        )

    def _hub_config(self, node: str, ports: NodePorts, identity: NodeIdentity) -> ServerConfig:
        assert ports.leaf is not None
        peers = [
            f"{_url_host(self.host_of(h))}:{self.ports[h].cluster}" for h in self.hubs if h != node
        ]
        return hq_server_config(
            self.public_keys,
            list(self.stores),
            identity.tls,
            name=node,
            port=ports.nats,
            leaf_port=ports.leaf,
            cluster_port=ports.cluster if self.hq_nodes else None,
            peer_cluster_addrs=peers if self.hq_nodes else (),
            http_port=ports.monitor,
            host=self._client_host(node),
            network_host=self.host_of(node),  # routes: HQ's own network only
            leaf_host=self._listen_host(node),
            route_tls=identity.route_tls,
        )

    def _listen_host(self, node: str) -> str:
        """Where a hub node's leaf listener binds: its address, or every address when stores
        reach it at another one over a backup uplink (its LTE-side address)."""
        return self.host_of(node) if len(set(self.addresses_of(node))) == 1 else ANY_ADDRESS

    def _client_host(self, node: str) -> str:
        address = self.host_of(node)
        return address if is_loopback(address) else CLIENT_HOST

    def _peer_routes(self, store: str, me: str) -> list[str]:
        return [
            f"{_url_host(self.host_of(f'{store}/{t}'))}:{self.ports[f'{store}/{t}'].cluster}"
            for t in self.stores[store]
            if f"{store}/{t}" != me
        ]

    def key_registry(self) -> KeyRegistry:
        """Every replica's event-signing key: what an event's signature is checked with."""
        keys = {r: decode_public_key(k) for r, k in self.signing_keys.items()}
        return KeyRegistry(keys, unsigned=self.unsigned_history)

    def clusters(self) -> list[str]:
        """Every route cluster: each store's tills, and HQ's hub nodes if more than one."""
        return [*self.stores, *([HQ] if self.hq_nodes else [])]

    def cluster_of(self, node: str) -> str | None:
        """The route cluster `node` belongs to (a store, or `hq`), None if it routes to none."""
        if node in self.hubs:
            return HQ if self.hq_nodes else None
        return parse_replica_id(node).store

    def addresses_of(self, node: str) -> list[str]:
        """Every address peers dial `node` at: what its certificate must name."""
        extra = [a[node] for a in self.uplinks.values() if node in a]
        return [self.host_of(node), *extra]


def init_site(
    root: Path,
    stores: dict[str, list[str]],
    *,
    host: str = "127.0.0.1",
    hosts: Mapping[str, str] | None = None,
    hq_nodes: Sequence[str] = (),
    uplinks: Mapping[str, Mapping[str, str]] | None = None,
    force: bool = False,
) -> Site:
    """Ports and fresh identities for every node of a new site: the standard ports for a
    node alone on its address, free ones for nodes sharing one; a site CA, and for each
    node a certificate naming its addresses and (replicas) an nkey.

    Refuses (SiteExists) to replace a site unless `force`; OS errors (an unwritable
    folder) become StorageError naming the folder.
    """
    try:
        if not force and (root / SITE_FILE).exists():
            raise SiteExists(root / SITE_FILE)
        try:
            site = _new_site(stores, host, dict(hosts or {}), list(hq_nodes), uplinks or {})
        except ValidationError as e:  # a layout given in code or by --host, not a file
            raise SiteFileError("site layout", "; ".join(err["msg"] for err in e.errors())) from e
        root.mkdir(parents=True, exist_ok=True)
        _issue_identities(root, site)
        (root / SITE_FILE).write_text(site.model_dump_json(indent=2) + "\n")
    except OSError as e:
        raise StorageError(str(root), f"cannot write a site here: {e.strerror or e}") from e
    return site


def _new_site(
    stores: dict[str, list[str]],
    host: str,
    hosts: dict[str, str],
    hq_nodes: list[str],
    uplinks: Mapping[str, Mapping[str, str]],
) -> Site:
    # Validated before any port is taken: a typo in an address is a clear error.
    site = Site(
        host=host,
        hosts=hosts,
        stores=stores,
        hq_nodes=hq_nodes,
        uplinks={k: dict(v) for k, v in uplinks.items()},
        ports={},
    )
    sharing = Counter(site.host_of(node) for node in site.nodes)
    seen: Counter[str] = Counter()
    for node in site.nodes:
        address, hub = site.host_of(node), node in site.hubs
        routes = not hub or bool(hq_nodes)  # tills route to their store, hubs to each other
        if sharing[address] > 1 and is_loopback(address):  # one machine: ask the OS
            site.ports[node] = _free_ports(address, hub=hub, routes=routes)
        else:  # the k-th node on that machine: the standard ports + 10 k
            site.ports[node] = _standard_ports(hub=hub, routes=routes, offset=10 * seen[address])
        seen[address] += 1
    return site


def _issue_identities(root: Path, site: Site) -> None:
    """The CA, then each node's identity folder; public keys into `site`."""
    ca = make_site_ca(root, "tillmesh-site")
    route_cas = {cluster: make_route_ca(root, cluster) for cluster in site.clusters()}
    for node in site.nodes:
        name = node.replace("/", "-")  # certificate names are one token
        folder = site.identity_dir(root, node)
        public = issue_identity(
            ca, folder, name, site.addresses_of(node), nkey=node in site.replicas,
            route_ca=route_cas.get(site.cluster_of(node) or ""),
        )  # fmt: skip
        if public is not None:
            site.public_keys[node] = public
            site.signing_keys[node] = write_signing_key(folder)


def _standard_ports(*, hub: bool, routes: bool, offset: int) -> NodePorts:
    port = {name: number + offset for name, number in STANDARD_PORTS.items()}
    return NodePorts(
        nats=port["nats"],
        cluster=port["cluster"] if routes else None,
        leaf=port["leaf"] if hub else None,
        monitor=port["monitor"],
        api=port["api"],
    )


def _free_ports(host: str, *, hub: bool, routes: bool) -> NodePorts:
    return NodePorts(
        nats=free_port(host),
        cluster=free_port(host) if routes else None,
        leaf=free_port(host) if hub else None,
        monitor=free_port(host),
        api=free_port(host),
    )


def add_signing_keys(root: Path) -> list[str]:
    """Give each replica of the site in `root` that has none an event-signing key (in its
    identity folder) and list it in site.json, with its history marked unsigned; the
    replicas given one. Its machine needs its bundle again (`site bundle`)."""
    site = load_site(root)
    added = [rid for rid in site.replicas if rid not in site.signing_keys]
    try:
        for rid in added:
            site.signing_keys[rid] = write_signing_key(site.identity_dir(root, rid))
        site.unsigned_history = sorted({*site.unsigned_history, *added})
        _replace_file(root / SITE_FILE, site.model_dump_json(indent=2) + "\n")
    except OSError as e:
        raise StorageError(str(root), f"cannot add keys here: {e.strerror or e}") from e
    return added


def _replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    tmp.replace(path)


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def check_address(address: str, what: str) -> str:
    """An IPv4 address or a DNS name, else ValueError naming `what`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None:
        if ip.version == 6:  # nats-server listen strings would need brackets: not yet
            raise ValueError(f"{what}: {address!r}: IPv6 addresses are not supported yet")
        return address
    if not _DNS_NAME.fullmatch(address) or re.fullmatch(r"[0-9.]+", address):  # 10.0.1.300
        raise ValueError(f"{what}: {address!r} is neither an IP address nor a host name")
    return address


_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # fmt: skip


def _url_host(address: str) -> str:
    """An address as it stands in a URL or host:port (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def save_site(root: Path, site: Site) -> None:
    """Write `site.json` (e.g. after setting the acquirer's address)."""
    (root / SITE_FILE).write_text(site.model_dump_json(indent=2) + "\n")


def load_site(root: Path) -> Site:
    path = root / SITE_FILE
    if not path.exists():
        raise StorageError(
            str(path),
            "no site here; create one with `tillmesh site init`, or install this"
            " machine's bundle with `tillmesh site install`",
        )
    return Site.model_validate_json(path.read_text())


def key_registry_for(db: Path, site_dir: Path | None) -> tuple[KeyRegistry | None, str]:
    """The key registry that checks a log file's events, and where it came from: the
    site in `site_dir`, else the folder above `db` holding a site.json; None and why not
    when there is none, or the site predates signing keys."""
    if site_dir is None:
        site_dir = next((p for p in db.resolve().parents if (p / SITE_FILE).exists()), None)
        if site_dir is None:
            return None, "no site.json above the log; give --site"
    site, shown = load_site(site_dir), _shown(site_dir / SITE_FILE)
    if not site.signing_keys:
        return None, f"{shown} has no signing keys (a site made before them)"
    return site.key_registry(), shown


def _shown(path: Path) -> str:
    """`path` as a person would type it here: relative to the working folder if inside."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
