"""`tillmesh demo --lan`: the demo's site on emulated machines, and the network's faults.

Every replica runs on a machine of its own (`site`: a network namespace, its own address,
the standard ports), HQ on 3 machines (hub nodes hq, hq2, hq3; the HQ replica on hq1),
each store on a LAN of its own whose router reaches HQ over a WAN and an LTE uplink. The
workload and the proof are the plain demo's (`story.Demo`); the faults are the network's:

1. store 1's WAN fails (its uplink loses carrier at both ends): its tills' leaf links
   must move to HQ's LTE-side addresses; the demo waits until every till of store 1
   reports `uplink: lte` in its status, and says how long that took;
2. its LTE fails too: store 1 is alone and sells on; then both come back;
3. a till's cable is pulled: it sells alone; then it is plugged back;
4. an HQ machine is lost (hq2 or hq3, whichever more tills link through: all its
   cables out): the tills linked through it move to another; then it comes back.

This process stays in the machine's own namespace: it reaches each replica's API through
a relay into its machine, with an API token of the replica's (`access`). `shutdown`
stops the replicas, then the network stops whatever else runs on its machines (hub
nodes, relays) and deletes them, on success, failure and Ctrl-C alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from broker.keyring import CA_CERT
from broker.subjects import HQ
from replicas.demo.access import ApiAccess
from replicas.demo.fleet import DemoError, Fleet, tillmesh_command
from replicas.demo.lan.site import LanMachines, lan_machines
from replicas.demo.netlab.commands import NetlabError
from replicas.demo.netlab.network import Network, netns_unavailable
from replicas.demo.netlab.runs import remove_stale
from replicas.demo.story import Demo
from replicas.demo.workload import Workload
from replicas.site import save_site

__all__ = ["HQ_MACHINES", "LanDemo", "describe_uplink", "unavailable"]

HQ_MACHINES = 3  # HQ's hub nodes, each on a machine of its own
LINK_TIMEOUT = 45.0  # seconds for leaf links to move after a cut (nats pings: ~3 s to notice)
# Share of `duration` (seconds of selling) spent in each phase.
SHARES = {
    "trading": 0.1, "wan_cut": 0.15, "alone": 0.15, "cable": 0.2, "hq_machine": 0.2, "calm": 0.2,
}  # fmt: skip

Uplink = dict[str, Any]  # a till's `status.sync.uplink`: connected, uplink, hub, ...


@dataclass
class LanDemo(Demo):
    """The demo on emulated machines: `Demo`'s workload and proof, this network's faults."""

    shares: ClassVar[dict[str, float]] = SHARES
    with_acquirer: ClassVar[bool] = False  # no processor on the emulated network (yet)
    uplink: dict[str, Uplink] = field(default_factory=dict)  # per till, as last polled

    def __post_init__(self) -> None:
        super().__post_init__()
        self.net = Network()
        self.relays: Path | None = None  # the folder of the relays' sockets

    async def run(self) -> bool:
        try:
            return await super().run()
        except NetlabError as e:
            raise DemoError(f"the emulated network: {e}") from e

    # --- setting up, shutting down -------------------------------------------------------

    async def _setup(self) -> None:
        n = len(self._layout())
        self._phase(
            "Network",
            f"a network namespace per machine: HQ's {HQ_MACHINES} machines, {n} store "
            f"LAN{'s' if n > 1 else ''} (10.77.<store>.0/24), each with a router and two "
            "uplinks to HQ, WAN (preferred) and LTE; veth cables and bridges",
        )
        await _to_the_end(self._build)

    def _build(self) -> None:
        """Machines, the site for their addresses, API tokens and relays. In a worker
        thread: hundreds of `ip` commands."""
        remove_stale()  # of demo or test runs killed before their teardown
        self.net.open()
        self.machines: LanMachines = lan_machines(self.net, self._layout(), HQ_MACHINES)
        # Machines on a LAN: their APIs speak HTTPS with their site certificates
        self.site = self.machines.write_site(self.root).model_copy(update={"api_tls": True})
        save_site(self.root, self.site)
        tokens = self.machines.issue_tokens(self.root, self.site, "demo")
        self.relays = Path(tempfile.mkdtemp(prefix="tillmesh-demo-"))  # short socket paths
        sockets = {
            r: self.machines.start_relay(self.site, r, self.relays) for r in self.site.replicas
        }
        self.api = ApiAccess(self.site, sockets, tokens, self.root / CA_CERT)
        wrap = {rid: self.machines.host(rid).exec_prefix for rid in self.site.replicas}
        self.fleet = Fleet(self.root, self.site, self.api, wrap)
        self.fleet.save_pids()  # the marker: this folder is the demo's to wipe next time

    async def shutdown(self) -> None:
        await super().shutdown()  # replicas first: each stops its own nats-server
        await _to_the_end(self._remove_network)

    def _remove_network(self) -> None:
        try:
            self.net.close()  # everything else on its machines, then the machines
        finally:
            if self.relays is not None:
                shutil.rmtree(self.relays, ignore_errors=True)

    def _starting(self) -> str:
        tills = len(self.site.replicas) - 1
        hubs = ", ".join(self.site.hq_nodes)
        return (
            f"HQ's hub nodes {hubs}, then HQ (on hq1) and {tills} tills, each on its own "
            "machine at its own address; the demo reaches each API through a relay into "
            "its machine, with an API token"
        )

    async def _start_site(self, attempts: int = 1) -> None:
        """Hub nodes first (stores dial them at once), then every replica. Standard ports
        on machines of their own: no port race to start over from."""
        await asyncio.gather(*(asyncio.to_thread(self._start_hub, n) for n in self.site.hq_nodes))
        await self._start_all()

    def _start_hub(self, node: str) -> None:
        log = self.site.data_dir(self.root, node) / "process.log"
        self.machines.start_hub_node(self.root.resolve(), node, tillmesh_command(), log)

    # --- seeing the links ------------------------------------------------------------------

    async def _poll_link(self, monitors: httpx.AsyncClient, rid: str) -> None:
        """A till's status says where its leaf link is (its nats-server's `/leafz`, read on
        its machine); HQ's count is the tills linked to any of its machines."""
        if rid == HQ:
            self.leaf[HQ] = sum(1 for u in self.uplink.values() if u.get("connected"))
            return
        uplink = self.status.get(rid, {}).get("sync", {}).get("uplink")
        if isinstance(uplink, dict):
            self.uplink[rid] = uplink
            self.leaf[rid] = int(bool(uplink.get("connected")))

    def _links(self, tills: list[str]) -> str:
        """How `tills` reach HQ, e.g. "s1/t1 lte via hq2, s1/t2 down"."""
        return ", ".join(f"{rid} {describe_uplink(self.uplink.get(rid))}" for rid in tills)

    async def _await_links(
        self, tills: list[str], ok: Callable[[Uplink], bool], what: str, since: float
    ) -> float:
        """Seconds from `since` until every till of `tills` reports a link that is `ok`
        (an upper bound: the last proving status poll)."""

        def seen(rid: str) -> bool:
            link = self.uplink.get(rid, {})
            fresh = self._polled_at.get(rid, 0.0) > since
            return fresh and bool(link.get("connected")) and ok(link)

        while not all(seen(rid) for rid in tills):
            if time.monotonic() - since > LINK_TIMEOUT:
                raise DemoError(
                    f"timed out after {LINK_TIMEOUT:.0f} s waiting for {what}: {self._links(tills)}"
                )
            await asyncio.sleep(0.1)
        return max(self._polled_at[rid] for rid in tills) - since

    # --- the faults --------------------------------------------------------------------------

    async def _faults(self, w: Workload, t: dict[str, float]) -> None:
        await self._wan_cut(t["wan_cut"])
        await self._store_alone(w, t["alone"])
        await self._cable_pulled(w, t["cable"])
        await self._hq_machine_lost(w, t["hq_machine"])

    def _tills_of(self, store: str) -> list[str]:
        return [f"{store}/{t}" for t in self.site.stores[store]]

    async def _wan_cut(self, seconds: float) -> None:
        tills = self._tills_of("s1")
        await asyncio.to_thread(self.net.stores["s1"].cut, "wan")
        cut = time.monotonic()
        self._phase(
            "Store 1 WAN cut",
            "store 1's WAN uplink down at both ends (its router's and the ISP's): its tills' "
            "leaf links must move to HQ's addresses on the LTE side; store 1 sells on",
        )
        took = await self._await_links(tills, _over("lte"), "store 1's links on LTE", cut)
        self._phase(
            "Store 1 on LTE",
            f"every store 1 till's leaf link seen on LTE {took:.1f} s after the cut "
            f"({self._links(tills)}); store 1 sells on over LTE",
        )
        await asyncio.sleep(seconds)

    async def _store_alone(self, w: Workload, seconds: float) -> None:
        tills, store = self._tills_of("s1"), self.net.stores["s1"]
        await asyncio.to_thread(store.cut, "lte")
        self._phase(
            "Store 1 alone",
            "its LTE uplink down too: store 1 has no way to HQ; its tills sell on among "
            "themselves, cards deferred, sales queued as 'not at HQ'",
        )
        mark = dict(w.model.heads)
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        await asyncio.to_thread(store.restore)
        self._track("store 1 back: HQ holds its sales", [HQ], heal)
        took = await self._await_links(tills, _over(), "store 1's links to HQ", heal[0])
        self._phase(
            "Store 1 back",
            f"WAN and LTE restored; store 1's leaf links seen up {took:.1f} s later "
            f"({self._links(tills)}); HQ pulls what it missed",
        )
        skus = await w.change_prices(12)
        self.note(f"HQ reprices {len(skus)} SKUs: {', '.join(skus[:4])}, ...")
        await self._await(self._track("price change at every till", self._all_tills()), 30)

    def _all_tills(self) -> list[str]:
        return [rid for rid in self.site.replicas if rid != HQ]

    async def _cable_pulled(self, w: Workload, seconds: float) -> None:
        store = f"s{self.stores}"
        victim = self._tills_of(store)[-1]
        machine = self.machines.host(victim)
        await asyncio.to_thread(machine.cut)
        self._phase(
            "Cable pulled",
            f"{victim}'s network cable is out: it sells alone, cut from its store and HQ; "
            "the others sell on",
        )
        mark = dict(w.model.heads)
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        await asyncio.to_thread(machine.restore)
        self.note(f"{victim}: cable back in")
        self._track(f"{victim}'s cable back in", self._scope_of(store), heal)

    async def _hq_machine_lost(self, w: Workload, seconds: float) -> None:
        if not self.site.hq_nodes:
            return
        linked = Counter(u.get("hub") for u in self.uplink.values() if u.get("connected"))
        lost = max(self.site.hq_nodes, key=lambda node: linked[node])  # never hq: HQ's own
        moving = [r for r, u in self.uplink.items() if u.get("connected") and u.get("hub") == lost]
        machine = self.machines.machine(lost)
        await asyncio.to_thread(machine.cut)
        gone = time.monotonic()
        self._phase(
            "HQ machine lost",
            f"{lost}'s machine is gone (every cable out): the {len(moving)} till link"
            f"{'' if len(moving) == 1 else 's'} through it must move to another HQ machine; "
            "HQ (on hq1) and every store sell on",
        )
        mark = dict(w.model.heads)
        if moving:
            what = f"the links through {lost} to move"
            took = await self._await_links(moving, lambda u: u.get("hub") != lost, what, gone)
            self._phase(
                "Links moved",
                f"{took:.1f} s after the loss: {self._links(moving)}",
            )
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        await asyncio.to_thread(machine.restore)
        self.note(f"{lost}: back on the network")
        self._track(f"{lost} back: HQ holds every sale", [HQ], heal)


def unavailable() -> str | None:
    """None if this machine can run the demo on emulated machines, else why not."""
    if os.geteuid() != 0:
        return "it needs root: it makes network namespaces, bridges and veth cables"
    try:
        why = netns_unavailable()
    except NetlabError as e:  # it could not remove its own probe
        why = str(e)
    return None if why is None else f"network namespaces unavailable here: {why}"


def describe_uplink(link: Uplink | None) -> str:
    """ "lte via hq2", "down", or "?" when unknown."""
    if not link:
        return "?"
    if not link.get("connected"):
        return "down"
    return f"{link.get('uplink') or '?'} via {link.get('hub') or '?'}"


def _over(uplink: str | None = None) -> Callable[[Uplink], bool]:
    """A link over `uplink` (any, by default)."""
    return lambda link: uplink is None or link.get("uplink") == uplink


async def _to_the_end(work: Callable[[], None]) -> None:
    """`work` in a worker thread, awaited to its end even if this task is cancelled meanwhile
    (Ctrl-C): the network is never torn down while it is still being built."""
    thread = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        await asyncio.shield(thread)
    except asyncio.CancelledError:
        await asyncio.wait([thread])
        with contextlib.suppress(BaseException):
            thread.result()  # cancelled anyway: its own error, if any, is not the news
        raise
