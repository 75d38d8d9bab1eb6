"""The emulated network (`Network`): its switch and core router, LANs, stores with their
uplinks, machines, and the routes between them; see the package's docstring for the
design. `netns_unavailable` says whether this machine can run it at all."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import subprocess
import time
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network
from types import TracebackType

from replicas.demo.netlab.commands import (
    CMD_TIMEOUT,
    NetlabError,
    in_ns,
    ip,
    namespaces,
    netns_pids,
    sysctl,
)
from replicas.demo.netlab.machines import Host, Lan, Port, Store
from replicas.demo.netlab.processes import stop_pids
from replicas.demo.netlab.runs import claim_prefix, leftovers, purge, release_prefix

__all__ = ["Network", "netns_unavailable"]

IFNAMSIZ = 15  # Linux's longest interface name
STATE_TIMEOUT = 3.0  # a link to report its new carrier state
UPLINK_POOL = "10.77.240.0/20"  # store uplinks' /30s are cut from it
TABLES = 100  # the first routing table (and rule priority) of routes by source address
LAST = 4000  # metric of an `unreachable` route: taken when no route with carrier is left
ROUTER_SYSCTLS = [
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=1",  # strict: a packet must come in where its source is routed
    "net.ipv4.icmp_ratelimit=0",  # "unreachable" to a host every time, not 1 a second
]
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
SWITCH = "switch"
CORE = "core"


def _ipv4_subnet(subnet: str, what: str) -> IPv4Network:
    net = ipaddress.ip_network(subnet)
    if not isinstance(net, IPv4Network):
        raise ValueError(f"{what}: {subnet} is not an IPv4 subnet")
    return net


class Network:
    """Hosts, LANs and stores of one run; `with Network() as net:` (or `async with`)
    removes all of it at exit, the body's exception or not."""

    def __init__(self, uplink_pool: str = UPLINK_POOL) -> None:
        self.prefix = ""  # given by `open`
        self.switch = ""  # the switch's namespace
        self.core: Host  # the core router
        self.lans: dict[str, Lan] = {}
        self.hosts: dict[str, Host] = {}
        self.stores: dict[str, Store] = {}
        self._uplink_pool = _ipv4_subnet(uplink_pool, "the uplink pool")
        self._uplink_subnets = self._uplink_pool.subnets(new_prefix=30)
        self._namespaces: list[str] = []  # made, in order
        self._ifaces = 0
        self._tables: dict[str, int] = {}  # the core's routing table per uplink name
        self._opened = False

    # --- lifetime -----------------------------------------------------------------------

    def open(self) -> Network:
        """Make the switch and the core; anything made is removed again if this fails."""
        if self._opened:
            raise NetlabError(f"network {self.prefix} is open already")
        self.prefix = claim_prefix()
        self._opened = True
        try:
            for ns in [n for n in namespaces() if n.startswith(f"{self.prefix}-")]:
                purge(ns)  # a dead process with our pid left them
            self.switch = self._namespace(SWITCH)
            self.core = self._host(CORE, router=True)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process in the run's namespaces by PID, delete the namespaces; then
        NetlabError if anything is left."""
        if not self._opened:
            return
        self._opened = False
        tracked = [p.pid for host in self.hosts.values() for p in host.started]
        inside = [pid for ns in self._namespaces for pid in netns_pids(ns)]
        survivors = stop_pids(dict.fromkeys([*tracked, *inside]))
        for host in self.hosts.values():
            for proc in host.started:  # reap our children (a Popen left running warns)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
        problems = []
        for ns in reversed(self._namespaces):
            try:
                ip("netns", "del", ns)
            except NetlabError as e:
                problems.append(str(e))
        release_prefix(self.prefix)
        problems += leftovers(self.prefix)
        problems += [f"process {pid} would not die" for pid in survivors]
        if problems:
            raise NetlabError(f"network {self.prefix} left: {'; '.join(problems)}")

    def __enter__(self) -> Network:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Network:
        return await asyncio.to_thread(self.open)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.close)

    # --- building -----------------------------------------------------------------------

    def lan(self, name: str, subnet: str, only_over: str | None = None) -> Lan:
        """A LAN the core routes: its first address is the core's, the others are for
        hosts. Every store reaches it over its uplinks; with `only_over` (an uplink name,
        e.g. "lte"), a store reaches it over that uplink only, and not at all without one,
        and the LAN's traffic to stores takes that uplink only, both ways."""
        if only_over is not None and not NAME.match(only_over):
            raise ValueError(f"LAN {name}: bad uplink name {only_over!r}")
        lan = self._lan(name, self._free_subnet(name, subnet), router=CORE)
        lan.only_over = only_over
        self._plug(self.core, lan, lan.gateway)
        if only_over is not None:
            self._uplink_table(only_over)
            rule = ["from", str(lan.subnet), "table", str(self._tables[only_over])]
            ip("rule", "add", *rule, "priority", str(TABLES), ns=self.core.ns)
        for store in self.stores.values():
            self._reach(store, lan)
        return lan

    def store(self, name: str, subnet: str, uplinks: Sequence[str] = ("wan", "lte")) -> Store:
        """A store LAN (`name`) and its router `<name>-gw` on the LAN's first address, with
        one uplink per name in `uplinks` to the core, the first preferred. The router
        reaches the core's LANs, never another store."""
        if not uplinks:
            raise ValueError(f"store {name} needs at least one uplink")
        if f"{name}-gw" in self.hosts:
            raise ValueError(f"host {name}-gw exists already: it would be {name}'s router")
        lan = self._lan(name, self._free_subnet(name, subnet), router=f"{name}-gw")
        router = self._host(f"{name}-gw", router=True)
        self._plug(router, lan, lan.gateway)
        links = {}
        for uplink in uplinks:
            try:
                subnet30 = next(self._uplink_subnets)
            except StopIteration:
                raise NetlabError(f"the uplink pool {self._uplink_pool} is used up") from None
            link = self._lan(f"{name}-{uplink}", subnet30, router=None)
            self._plug(self.core, link, subnet30.network_address + 1)
            self._plug(router, link, subnet30.network_address + 2)
            links[uplink] = link
        store = self.stores[name] = Store(self, name, lan, router, links)
        self._route(self.core, lan.subnet, links, via_core=False)
        for uplink, table in self._tables.items():
            self._route_only_over(store, uplink, table)
        for plain in self.lans.values():
            if plain.router == CORE:
                self._reach(store, plain)
        return store

    def host(self, name: str, on: dict[str, str]) -> Host:
        """A machine with one cable per LAN in `on` (LAN name -> its address there), loopback
        up, a default route via the first LAN's gateway. On several LANs, a packet from its
        address on a LAN leaves by that LAN's cable (routes by source address)."""
        if not on:
            raise ValueError(f"host {name} must be on a LAN")
        for lan in on:
            if lan not in self.lans or self.lans[lan].uplink:
                raise ValueError(f"no LAN {lan} for host {name} (LANs: {self._plain()})")
        addresses = {lan: self._check_address(self.lans[lan], a) for lan, a in on.items()}
        host = self._host(name, router=False)
        for lan, address in addresses.items():
            self._plug(host, self.lans[lan], address)
        gateway = self.lans[next(iter(on))].gateway
        ip("route", "add", "default", "via", str(gateway), ns=host.ns)
        if len(on) > 1:
            for table, port in enumerate(host.ports.values(), start=TABLES):
                self._source_routes(host, port, table)
        return host

    def split(self, lan: str, hosts: Iterable[str]) -> None:
        """Split `lan` in two, as a failed switch between two halves of a store does:
        `hosts` (host names) go on a bridge of their own, the rest (the router too)
        stay. Cables keep their carrier: across the split, connects time out."""
        the_lan = self.lans[lan]
        if the_lan.split_bridge is not None:
            raise NetlabError(f"LAN {lan} is split already: join it first")
        far = [the_lan.ports[h] for h in hosts]  # KeyError: not on that LAN
        bridge = f"{self.prefix}b{self._next_iface()}"
        ip("link", "add", bridge, "type", "bridge", ns=self.switch)
        ip("link", "set", bridge, "alias", f"{lan}-far", "up", ns=self.switch)
        the_lan.split_bridge = bridge
        for port in far:
            ip("link", "set", port.outside, "master", bridge, ns=self.switch)

    def join(self, lan: str) -> None:
        """Undo `split`: every cable of `lan` on its one bridge again."""
        the_lan = self.lans[lan]
        if the_lan.split_bridge is None:
            return
        for port in the_lan.ports.values():
            ip("link", "set", port.outside, "master", the_lan.bridge, ns=self.switch)
        ip("link", "del", the_lan.split_bridge, ns=self.switch)
        the_lan.split_bridge = None

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    @property
    def namespaces(self) -> list[str]:
        """The namespaces this network made, in order (`ip netns exec <one> ...` to look)."""
        return list(self._namespaces)

    # --- the parts ----------------------------------------------------------------------

    def _namespace(self, name: str) -> str:
        ns = f"{self.prefix}-{name}"
        ip("netns", "add", ns)
        self._namespaces.append(ns)
        ip("link", "set", "lo", "up", ns=ns)  # processes bind 127.0.0.1 too
        # a link without carrier is no route: fail over (routers), fail fast (hosts)
        sysctl(ns, "net.ipv4.conf.all.ignore_routes_with_linkdown=1")
        return ns

    def _host(self, name: str, *, router: bool) -> Host:
        self._assert_open()
        if not NAME.match(name) or name == SWITCH:
            raise ValueError(f"bad host name {name!r}: lowercase, digits, '-'; not {SWITCH}")
        if name in self.hosts:
            raise ValueError(f"host {name} exists already")
        host = self.hosts[name] = Host(self, name, f"{self.prefix}-{name}")
        self._namespace(name)
        if router:
            sysctl(host.ns, *ROUTER_SYSCTLS)
        return host

    def _free_subnet(self, name: str, subnet: str) -> IPv4Network:
        """`subnet` if it is IPv4 with room for hosts and overlaps no LAN nor the uplinks."""
        net = _ipv4_subnet(subnet, f"LAN {name}")
        if net.prefixlen > 30:
            raise ValueError(f"LAN {name}: {subnet} has no room for a router and hosts")
        taken = {lan.name: lan.subnet for lan in self.lans.values() if not lan.uplink}
        for other, used in {**taken, "the uplink pool": self._uplink_pool}.items():
            if net.overlaps(used):
                raise ValueError(f"LAN {name} {net} overlaps {other} {used}")
        return net

    def _lan(self, name: str, subnet: IPv4Network, *, router: str | None) -> Lan:
        self._assert_open()
        if not NAME.match(name) or name in self.lans:
            raise ValueError(f"bad or taken LAN name {name!r}")
        bridge = f"{self.prefix}b{self._next_iface()}"
        ip("link", "add", bridge, "type", "bridge", ns=self.switch)
        ip("link", "set", bridge, "alias", name, "up", ns=self.switch)
        lan = self.lans[name] = Lan(name, subnet, bridge, router)
        return lan

    def _plug(self, host: Host, lan: Lan, address: IPv4Address | None) -> Port:
        """A veth cable from `host` to `lan`'s bridge, `address` on the host's end."""
        assert address is not None
        n = self._next_iface()
        inside, outside = f"{self.prefix}h{n}", f"{self.prefix}s{n}"
        ip(
            "link", "add", "name", inside, "netns", host.ns,
            "type", "veth", "peer", "name", outside, "netns", self.switch,
        )  # fmt: skip
        label = f"{host.name}@{lan.name}"
        ip("link", "set", outside, "master", lan.bridge, "alias", label, "up", ns=self.switch)
        ip("link", "set", inside, "alias", lan.name, "up", ns=host.ns)
        ip("addr", "add", f"{address}/{lan.subnet.prefixlen}", "dev", inside, ns=host.ns)
        port = Port(host.name, lan.name, inside, outside, address)
        host.ports[lan.name] = lan.ports[host.name] = port
        self._wait_state([port], "UP")
        return port

    def _route(
        self, router: Host, dest: IPv4Network, links: dict[str, Lan], *, via_core: bool
    ) -> None:
        """Routes from `router` to `dest` over each uplink in `links`, preferred first. The
        core's end of an uplink is its first address, the store router's the second."""
        for rank, link in enumerate(links.values(), start=1):
            via = link.subnet.network_address + (1 if via_core else 2)
            ip("route", "add", str(dest), "via", str(via), "metric", str(10 * rank), ns=router.ns)

    def _reach(self, store: Store, plain: Lan) -> None:
        """Routes from `store`'s router to the core's LAN `plain`: over every uplink, or
        over the one it is reached `only_over`, if the store has it."""
        links = store.uplinks
        if plain.only_over is not None:
            only = plain.only_over
            links = {only: links[only]} if only in links else {}
        self._route(store.router, plain.subnet, links, via_core=True)

    def _uplink_table(self, uplink: str) -> None:
        """The core's routing table of traffic from the LANs reached only over `uplink`:
        to each store over that uplink, made once."""
        if uplink not in self._tables:
            self._tables[uplink] = TABLES + len(self._tables)
            for store in self.stores.values():
                self._route_only_over(store, uplink, self._tables[uplink])

    def _route_only_over(self, store: Store, uplink: str, table: int) -> None:
        """In the core's `table`: `store` over its `uplink`, if it has it, else (and while
        that uplink has no carrier) unreachable rather than over another uplink."""
        dest, table_ = str(store.lan.subnet), ["table", str(table)]
        if uplink in store.uplinks:
            via = store.uplinks[uplink].subnet.network_address + 2
            ip("route", "add", dest, "via", str(via), "metric", "10", *table_, ns=self.core.ns)
        ip("route", "add", "unreachable", dest, "metric", str(LAST), *table_, ns=self.core.ns)

    def _source_routes(self, host: Host, port: Port, table: int) -> None:
        """`host`'s table for packets from its address on `port`'s LAN: that LAN, the
        rest via its gateway, over no other cable (unreachable while this one is out)."""
        lan, dev, table_ = self.lans[port.lan], port.inside, ["table", str(table)]
        ip("route", "add", str(lan.subnet), "dev", dev, "src", str(port.address), *table_,
            ns=host.ns)  # fmt: skip
        ip("route", "add", "default", "via", str(lan.gateway), "dev", dev, *table_, ns=host.ns)
        ip("route", "add", "unreachable", "default", "metric", str(LAST), *table_, ns=host.ns)
        ip("rule", "add", "from", str(port.address), *table_, "priority", str(TABLES),
            ns=host.ns)  # fmt: skip

    def set_ports(self, ports: list[Port], *, up: bool) -> None:
        """Switch ends of `ports` up or down; returns once every host end shows it."""
        for port in ports:
            ip("link", "set", port.outside, "up" if up else "down", ns=self.switch)
        self._wait_state(ports, "UP" if up else "DOWN")

    def _wait_state(self, ports: list[Port], state: str) -> None:
        """Poll until each host end's operstate is `state`: the kernel sets it in the same
        step as it marks (or clears) the routes over the link, so routing has followed."""
        deadline = time.monotonic() + STATE_TIMEOUT
        for port in ports:
            ns = self.hosts[port.host].ns
            while f" state {state} " not in (line := ip("-o", "link", "show", port.inside, ns=ns)):
                if time.monotonic() > deadline:
                    raise NetlabError(
                        f"{port.host}@{port.lan} not {state} after {STATE_TIMEOUT}s: {line}"
                    )
                time.sleep(0.01)

    # --- checks -------------------------------------------------------------------------

    def _assert_open(self) -> None:
        if not self._opened:
            raise NetlabError("the network is not open: use `with Network() as net:`")

    def _plain(self) -> list[str]:
        return [name for name, lan in self.lans.items() if not lan.uplink]

    def _next_iface(self) -> int:
        """A number for the next interface names (`<prefix><h|s|b><n>`), if they fit."""
        self._ifaces += 1
        if len(f"{self.prefix}h{self._ifaces}") > IFNAMSIZ:
            raise NetlabError(f"{self._ifaces} interfaces: names would pass {IFNAMSIZ} chars")
        return self._ifaces

    def _check_address(self, lan: Lan, address: str) -> IPv4Address:
        addr = ipaddress.ip_address(address)
        hosts = list(lan.subnet.hosts())
        if addr not in hosts or addr == lan.gateway:
            raise ValueError(f"{address} is not a free host address of {lan.name} {lan.subnet}")
        if any(p.address == addr for p in lan.ports.values()):
            raise ValueError(f"{address} is taken on {lan.name}")
        assert isinstance(addr, IPv4Address)
        return addr


# --- is it possible here? -----------------------------------------------------------------


def netns_unavailable() -> str | None:
    """None if this machine lets the lab work (namespaces, bridges, veths, `ip netns exec`),
    else why not (a test's skip reason, the demo's refusal). A teardown that leaves
    something is no reason to skip: its NetlabError is raised."""
    hint = "" if os.geteuid() == 0 else " (not root)"
    net = Network()
    try:  # closed on the way out whatever happens, Ctrl-C included
        net.open()  # removes what it made if it fails
        net.store("probe", "10.77.0.0/29")
        host = net.host("probe-t1", on={"probe": "10.77.0.2"})
        argv = in_ns(host.ns, ["true"])
        subprocess.run(argv, check=True, capture_output=True, timeout=CMD_TIMEOUT)
    except (NetlabError, OSError, subprocess.SubprocessError) as e:
        return f"{e}{hint}"
    finally:
        net.close()
    return None
