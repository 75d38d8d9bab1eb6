"""A test site on emulated machines (helpers, no tests): the machines and site of
`replicas.demo.lan.site` (every replica in a network namespace of its own, stores with a
WAN and an LTE uplink), run as the tests' `Mesh` (tests/e2e/harness.py), each API reached
through a relay socket with a token of its own.

    site = lan_site(netns, tmp_path, {"s1": ["t1", "t2", "t3"], "s2": ["t1", "t2", "t3"]})
    async with site.mesh() as mesh: ...     # started, reaped at the end
    site.net.stores["s1"].cut("wan")        # the store's WAN fails: traffic takes the LTE
    site.host("s1/t2").cut()                # a till's cable is pulled

With `hq_nodes`, `mesh()` starts the bare hub nodes first. With `tap=True` the `lte`
address of node `hq` is a recording relay (`tests/e2e/tap.py`, machine `tap`) in front of
`hq1`: what an attacker on the LTE link sees lands in `site.tap_file`.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from replicas.demo.lan.site import HQ_ADDRESS, LanMachines, lan_machines
from replicas.demo.netlab.machines import Host
from replicas.demo.netlab.network import Network
from replicas.demo.netlab.processes import first_line
from replicas.site import STANDARD_PORTS, load_site
from tests.e2e.harness import TILLMESH, Mesh, running_mesh

__all__ = ["HQ_ADDRESS", "LanSite", "lan_site"]

TAP_ADDRESS = "10.77.101.200"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LanSite:
    machines: LanMachines
    root: Path  # the test's folder: the site in site/, logs in logs/, relays in relays/
    tap_file: Path | None = None  # what the tap on the LTE link to `hq` carried

    @property
    def net(self) -> Network:
        return self.machines.net

    def host(self, rid: str) -> Host:
        return self.machines.host(rid)

    def machine(self, node: str) -> Host:
        return self.machines.machine(node)

    @asynccontextmanager
    async def mesh(self) -> AsyncIterator[Mesh]:
        site_dir = self.root / "site"
        site = load_site(site_dir)
        tokens = self.machines.issue_tokens(site_dir, site, "e2e")
        relays = self.root / "relays"
        relays.mkdir(exist_ok=True)
        sockets = {rid: self.machines.start_relay(site, rid, relays) for rid in site.replicas}
        wrap = {rid: self.host(rid).exec_prefix for rid in site.replicas}
        for node in site.hq_nodes:  # bare hub nodes first: stores may dial them at once
            log = self.root / "logs" / f"{node}.log"
            self.machines.start_hub_node(site_dir, node, TILLMESH, log)
        async with running_mesh(
            self.root,
            self.machines.stores,
            site_made=True,
            wrap=wrap,
            sockets=sockets,
            tokens=tokens,
        ) as mesh:
            yield mesh


def lan_site(
    net: Network,
    tmp_path: Path,
    stores: dict[str, list[str]],
    hq_nodes: int | None = None,
    *,
    tap: bool = False,
) -> LanSite:
    """The machines of `stores` and HQ (`hq_nodes` machines, or one), the site written in
    `tmp_path`/site with each node's address (standard ports)."""
    site = LanSite(lan_machines(net, stores, hq_nodes), tmp_path)
    uplinks = site.machines.uplinks()
    if tap:
        uplinks["lte"]["hq"] = _start_tap(site, uplinks["lte"]["hq"])
    site.machines.write_site(tmp_path / "site", uplinks)
    return site


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
