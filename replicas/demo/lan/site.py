"""A site on emulated machines: every replica on a machine of its own (a network namespace
of `replicas.demo.netlab`) at its own address, with the standard ports; stores on LANs of
their own with a WAN and an LTE uplink to HQ; the site written for those addresses.

    machines = lan_machines(net, {"s1": ["t1", "t2"], "s2": ["t1"]}, hq_nodes=3)
    site = machines.write_site(root)         # site.json + identities for these addresses
    tokens = machines.issue_tokens(root, site, "demo")
    sock = machines.start_relay(site, "s1/t1", folder)  # how this process reaches its API
    machines.start_hub_node(root, "hq2", tillmesh, log)
    net.stores["s1"].cut("wan")              # the store's WAN fails: traffic takes the LTE
    machines.host("s1/t2").cut()             # a till's cable is pulled

HQ is one machine `hq` on the LAN `dc` by default. With `hq_nodes`, HQ is machines
`hq1`..`hq<n>` (the site's hub nodes `hq`, `hq2`, ...), each on `dc` (WAN side: stores
reach it over their WAN only, 10.77.100.11..) and `dc-lte` (LTE side: over their LTE only,
10.77.101.11..); the site lists the `dc-lte` addresses as the `lte` uplink, and the HQ
replica runs on `hq1`. Tills are at 10.77.<n>.11, .12, ... on store n's LAN.

A replica on a network address refuses to run without an API token, and this process
(in the machine's own namespace) cannot reach the emulated machines: each replica gets a
token (`issue_tokens`) and a relay from a Unix socket into its machine (`start_relay`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE, STDOUT, Popen

from broker.subjects import HQ
from replicas.api.tokens import TOKENS_FILE, TokenStore
from replicas.demo.netlab import relay
from replicas.demo.netlab.commands import NetlabError
from replicas.demo.netlab.machines import Host
from replicas.demo.netlab.network import Network
from replicas.demo.netlab.processes import first_line
from replicas.site import Site, init_site

__all__ = ["HQ_ADDRESS", "LanMachines", "lan_machines"]

HQ_LAN = "10.77.100.0/24"
HQ_ADDRESS = "10.77.100.10"  # the one HQ machine's, without hub nodes
HQ_LANS = {"dc": ("10.77.100", "wan"), "dc-lte": ("10.77.101", "lte")}  # with hub nodes: /24s
START_TIMEOUT = 20.0  # a relay or hub node to say it is up


@dataclass
class LanMachines:
    """The machines of a site's replicas and HQ hub nodes, on `net`."""

    net: Network
    stores: dict[str, list[str]]
    hosts: dict[str, Host]  # replica id -> its machine (HQ: hub node hq's)
    hq_nodes: dict[str, Host] = field(default_factory=dict)  # hub node -> its machine

    def host(self, rid: str) -> Host:
        return self.hosts[rid]

    def machine(self, node: str) -> Host:
        """The machine of a replica or hub node (`hq2` runs on machine `hq2`)."""
        return self.hosts.get(node) or self.hq_nodes[node]

    def hq_addresses(self, lan: str = "dc") -> dict[str, str]:
        """Hub node -> its address on `lan` ("dc", or "dc-lte" with hub nodes)."""
        return {node: host.address(lan) for node, host in self.hq_nodes.items()}

    def uplinks(self) -> dict[str, dict[str, str]]:
        """The site's backup uplinks: with hub nodes, each one's LTE-side address."""
        return {"lte": self.hq_addresses("dc-lte")} if "dc-lte" in self.net.lans else {}

    def write_site(
        self, root: Path, uplinks: Mapping[str, Mapping[str, str]] | None = None
    ) -> Site:
        """site.json and every node's identity in `root`, for these machines' addresses
        (`uplinks`: the site's backup uplinks, these machines' by default)."""
        addresses = {node: host.address("dc") for node, host in self.hq_nodes.items()}
        addresses |= {rid: host.address() for rid, host in self.hosts.items() if rid != HQ}
        return init_site(
            root,
            self.stores,
            hosts=addresses,
            hq_nodes=[node for node in self.hq_nodes if node != HQ],
            uplinks=self.uplinks() if uplinks is None else uplinks,
        )

    def issue_tokens(self, root: Path, site: Site, name: str) -> dict[str, str]:
        """An API token per replica, named `name`: HQ's may change the catalog (hq_admin),
        a till's may refund and switch its HQ link (manager)."""
        return {
            rid: TokenStore(site.data_dir(root, rid) / TOKENS_FILE).issue(
                name, "hq_admin" if rid == HQ else "manager"
            )
            for rid in site.replicas
        }

    def start_relay(self, site: Site, rid: str, folder: Path) -> Path:
        """A Unix socket in `folder` that reaches `rid`'s API, served inside its machine."""
        sock = folder / f"{rid.replace('/', '-')}.sock"
        argv = relay.command(str(sock), site.host_of(rid), site.node(rid).api)
        proc = self.hosts[rid].popen(argv, stdout=PIPE, stderr=STDOUT)
        _await_line(proc, relay.READY, f"the relay to {rid}'s API")
        return sock

    def start_hub_node(self, root: Path, node: str, tillmesh: Sequence[str], log: Path) -> None:
        """`tillmesh hq --node <node>` on its machine, returned once it says it is up."""
        argv = [*tillmesh, "hq", "--data", str(root), "--node", node]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as err:
            proc = self.hq_nodes[node].popen(argv, stdout=PIPE, stderr=err)
        _await_line(proc, f"{node} hub node up", f"hub node {node} (see {log})")


def _await_line(proc: Popen[bytes], expected: str, what: str) -> None:
    """Until `proc` says `expected` on its first line; NetlabError if it does not."""
    said = first_line(proc, START_TIMEOUT)
    if proc.stdout is not None:
        proc.stdout.close()  # it says nothing more
    if not said.startswith(expected):
        raise NetlabError(f"{what} did not start: {said.strip()!r}")


def lan_machines(
    net: Network, stores: dict[str, list[str]], hq_nodes: int | None = None
) -> LanMachines:
    """HQ on its LAN (or `hq_nodes` machines on one LAN per uplink), each store on a LAN of
    its own (10.77.<n>.0/24, tills at .11, .12, ...)."""
    hq = _hq_machines(net, hq_nodes)
    nodes = {_node_name(machine): host for machine, host in hq.items()}  # hq1 is node hq
    hosts: dict[str, Host] = {HQ: nodes[HQ]}  # the HQ replica runs on hub node hq's machine
    for n, (store, tills) in enumerate(stores.items(), start=1):
        net.store(store, f"10.77.{n}.0/24")
        for k, till in enumerate(tills, start=11):
            hosts[f"{store}/{till}"] = net.host(f"{store}-{till}", on={store: f"10.77.{n}.{k}"})
    return LanMachines(net, stores, hosts, nodes)


def _node_name(machine: str) -> str:
    return HQ if machine in ("hq", "hq1") else machine


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
