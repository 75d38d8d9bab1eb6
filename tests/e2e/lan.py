"""A site on emulated machines (helpers, no tests): every replica in a network namespace
of its own (replicas/demo/netlab/) at its own address, stores on LANs of their own with a WAN
and an LTE uplink to HQ's LAN, the replicas real `tillmesh` processes (tests/e2e/harness.py
`Mesh`), each API reached through a relay socket and called with a token of its own.

    site = lan_site(netns, tmp_path, {"s1": ["t1", "t2", "t3"], "s2": ["t1", "t2", "t3"]})
    async with site.mesh() as mesh: ...     # started, reaped at the end
    site.net.stores["s1"].cut("wan")        # the store's WAN fails: traffic takes the LTE
    site.host("s1/t2").cut()                # a till's cable is pulled

HQ is one machine `hq` on the LAN `dc` by default. With `hq_nodes=3`, HQ is machines
`hq1`..`hq3` (the site's hub nodes `hq`, `hq2`, `hq3`), each on `dc` (WAN side: stores
reach it over their WAN only, 10.77.100.11..) and `dc-lte` (LTE side: over their LTE only,
10.77.101.11..); the site lists the `dc-lte` addresses as the `lte` uplink, the HQ replica
runs on `hq1`, and `mesh()` starts the bare hub nodes on the others too. With `tap=True`
the `lte` address of node `hq` is a recording relay (`tests/e2e/tap.py`, machine `tap`)
in front of `hq1`: what an attacker on the LTE link sees lands in `site.tap_file`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from replicas.api.tokens import TOKENS_FILE, TokenStore
from replicas.demo.netlab import relay
from replicas.demo.netlab.machines import Host
from replicas.demo.netlab.network import Network
from replicas.demo.netlab.processes import first_line
from replicas.site import STANDARD_PORTS, init_site, load_site
from tests.e2e.harness import Mesh, running_mesh

__all__ = ["LanSite", "lan_site"]

HQ_LAN = "10.77.100.0/24"
HQ_ADDRESS = "10.77.100.10"
TAP_ADDRESS = "10.77.101.200"
ROOT = Path(__file__).resolve().parents[2]
TILLMESH = [sys.executable, "-m", "replicas.cli.main"]
HQ_LANS = {"dc": ("10.77.100", "wan"), "dc-lte": ("10.77.101", "lte")}  # with hq_nodes: /24s


@dataclass
class LanSite:
    net: Network
    root: Path
    stores: dict[str, list[str]]
    hosts: dict[str, Host]  # replica id -> its machine
    hq_nodes: dict[str, Host] = field(default_factory=dict)  # HQ's machines, by name
    tap_file: Path | None = None  # what the tap on the LTE link to `hq` carried

    def host(self, rid: str) -> Host:
        return self.hosts[rid]

    def hq_addresses(self, lan: str = "dc") -> dict[str, str]:
        """HQ machine name -> its address on `lan` ("dc", or "dc-lte" with `hq_nodes`)."""
        return {name: host.address(lan) for name, host in self.hq_nodes.items()}

    @asynccontextmanager
    async def mesh(self) -> AsyncIterator[Mesh]:
        site_dir = self.root / "site"
        site = load_site(site_dir)
        tokens = {
            rid: TokenStore(site.data_dir(site_dir, rid) / TOKENS_FILE).issue("e2e", "manager")
            for rid in site.replicas
        }
        sockets = {rid: self._relay(rid, site.host_of(rid)) for rid in site.replicas}
        wrap = {rid: self.hosts[rid].exec_prefix for rid in site.replicas}
        for node in site.hq_nodes:  # bare hub nodes first: stores may dial them at once
            self._start_hub_node(node, site_dir)
        async with running_mesh(
            self.root, self.stores, site_made=True, wrap=wrap, sockets=sockets, tokens=tokens
        ) as mesh:
            yield mesh

    def machine(self, node: str) -> Host:
        """The machine of a replica or hub node (`hq2` runs on machine `hq2`)."""
        return self.hosts.get(node) or self.hq_nodes[node]

    def _start_hub_node(self, node: str, site_dir: Path) -> None:
        log = self.root / "logs" / f"{node}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [*TILLMESH, "hq", "--data", str(site_dir), "--node", node]
        with open(log, "ab") as out:
            proc = self.hq_nodes[node].popen(argv, stdout=-1, stderr=out, cwd=ROOT)
        said = first_line(proc, 20.0)
        if proc.stdout is not None:
            proc.stdout.close()  # it says nothing more
        assert "hub node up" in said, f"hub node {node}: {said!r}\n{log.read_text()[-2000:]}"

    def _relay(self, rid: str, address: str) -> Path:
        """A Unix socket the test reaches `rid`'s API through, served inside its machine."""
        sock = self.root / "relays" / f"{rid.replace('/', '-')}.sock"
        sock.parent.mkdir(parents=True, exist_ok=True)
        argv = relay.command(str(sock), address, STANDARD_PORTS["api"])
        proc = self.hosts[rid].popen(argv, stdout=-1, stderr=-2)
        said = first_line(proc, 10.0)
        if proc.stdout is not None:
            proc.stdout.close()  # it says nothing more
        assert said.startswith(relay.READY), f"relay for {rid}: {said!r}"
        return sock


def lan_site(
    net: Network,
    tmp_path: Path,
    stores: dict[str, list[str]],
    hq_nodes: int | None = None,
    *,
    tap: bool = False,
) -> LanSite:
    """HQ on its LAN (or `hq_nodes` machines on one LAN per uplink), each store on a LAN of
    its own (10.77.<n>.0/24, tills at .11, .12, ...), the site written with each node's
    address (standard ports)."""
    hq = _hq_machines(net, hq_nodes)
    names = {machine: _node_name(machine) for machine in hq}  # hq1 -> hq, hq2 -> hq2
    hosts: dict[str, Host] = {"hq": next(iter(hq.values()))}  # the HQ replica's machine
    addresses = {names[m]: host.address("dc") for m, host in hq.items()}
    for n, (store, tills) in enumerate(stores.items(), start=1):
        net.store(store, f"10.77.{n}.0/24")
        for k, till in enumerate(tills, start=11):
            rid, address = f"{store}/{till}", f"10.77.{n}.{k}"
            hosts[rid] = net.host(f"{store}-{till}", on={store: address})
            addresses[rid] = address
    uplinks = {}
    if hq_nodes is not None:
        uplinks["lte"] = {names[m]: host.address("dc-lte") for m, host in hq.items()}
    site = LanSite(net, tmp_path, stores, hosts, {names[m]: h for m, h in hq.items()})
    if tap:
        uplinks["lte"]["hq"] = _start_tap(site, uplinks["lte"]["hq"])
    init_site(
        tmp_path / "site",
        stores,
        hosts=addresses,
        hq_nodes=[n for n in names.values() if n != "hq"],
        uplinks=uplinks,
    )
    return site


def _node_name(machine: str) -> str:
    return "hq" if machine in ("hq", "hq1") else machine


def _start_tap(site: LanSite, target: str) -> str:
    """A recording relay on machine `tap` in front of `target`:7422; its address."""
    address = TAP_ADDRESS
    tap = site.net.host("tap", on={"dc-lte": address})
    site.tap_file = site.root / "tap.bin"
    port = str(STANDARD_PORTS["leaf"])
    argv = [sys.executable, "-m", "tests.e2e.tap", address, port, target, port, str(site.tap_file)]
    proc = tap.popen(argv, stdout=-1, stderr=-2, cwd=ROOT)
    said = first_line(proc, 10.0)
    if proc.stdout is not None:
        proc.stdout.close()
    assert said.startswith("ready"), f"tap: {said!r}"
    return address


def _hq_machines(net: Network, nodes: int | None) -> dict[str, Host]:
    """`hq` on a LAN `dc` every uplink reaches; or `hq1`..`hq<nodes>` on one LAN per uplink
    (HQ_LANS), at .11, .12, ... on each."""
    if nodes is None:
        net.lan("dc", HQ_LAN)
        return {"hq": net.host("hq", on={"dc": HQ_ADDRESS})}
    if not 1 <= nodes <= 9:
        raise ValueError(f"hq_nodes: 1 to 9 machines, not {nodes}")
    for lan, (prefix, uplink) in HQ_LANS.items():
        net.lan(lan, f"{prefix}.0/24", only_over=uplink)
    return {
        f"hq{k}": net.host(f"hq{k}", on={lan: f"{p}.{10 + k}" for lan, (p, _) in HQ_LANS.items()})
        for k in range(1, nodes + 1)
    }
