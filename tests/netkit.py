"""Emulated machines for tests: each host a Linux network namespace, wired by veth cables to
bridges, so every replica runs on a network stack of its own and a link is cut for real.

    with Network() as net:  # or `async with`; the `netns` fixture gives one, or skips why
        net.lan("dc", "10.77.100.0/24")                # HQ's LAN, routed by the core (.1)
        s1 = net.store("s1", "10.77.1.0/24")           # LAN, router (.1), uplinks wan, lte
        hq = net.host("hq", on={"dc": "10.77.100.10"})
        t1 = net.host("s1-t1", on={"s1": "10.77.1.11"})
        hq.listen(4222)                                # or hq.popen([...])
        assert await t1.can_reach("10.77.100.10", 4222)
        s1.cut("wan")     # t1 reaches HQ over LTE; s1.cut() cuts both; s1.restore()
        t1.cut()          # t1's cable is out; t1.restore()

    HQ with an address per uplink (a store's leaf link lists "HQ over the WAN, then over
    LTE"): LANs that stores reach over one uplink only.

        net.lan("dc", "10.77.100.0/24", only_over="wan")
        net.lan("dc-lte", "10.77.101.0/24", only_over="lte")
        hq1 = net.host("hq1", on={"dc": "10.77.100.11", "dc-lte": "10.77.101.11"})
        s1.cut("wan")     # 10.77.100.11 unreachable from s1 at once, 10.77.101.11 works

A process runs on a host with `host.popen(argv)`, or with `host.exec_prefix` before its
command line (e.g. as a `Mesh` `wrap`, tests/e2e/harness.py).

A `Network` owns everything it creates, and all of it lives inside namespaces named after
the run, `tmk<pid><letter>-<name>` (`tmk` marks this kit, the pid and a letter make the run
unique on the machine):

- `<prefix>-switch` holds every LAN's bridge and the switch end of every cable. Not the root
  namespace: the machine's own networking stays untouched (no interface for a network
  manager or firewall to act on, no path to the host's addresses), and teardown is "stop the
  processes, delete the namespaces": interfaces die with their namespace, a veth with
  either of its ends. Interfaces are born inside their namespace (`ip link add ... netns`),
  so none ever appears in the root namespace, not even for an instant.
- `<prefix>-core` is the router of the outside world: the gateway (first address) of every
  plain LAN, e.g. HQ's, and the far end of every store uplink.
- `<prefix>-<store>-gw` is a store's router: the gateway of the store's LAN, with one uplink
  (WAN, LTE, ...) to the core each.
- `<prefix>-<host>`, one per host, loopback up, a default route via its first LAN's gateway.

Store uplinks. Each uplink is a link of its own (a two-port bridge: store router, core).
Both routers route over all of a store's uplinks in preference order (metric 10, 20, ...)
and ignore a route over a link without carrier (`ignore_routes_with_linkdown`). Cutting an
uplink takes both its switch ports down, so both ends lose carrier and both routers move to
the next uplink at once; a till keeps one HQ address and its traffic moves from WAN to LTE
(no NAT: HQ sees the till's own address either way). With every uplink cut, the store router
answers "unreachable". Store routers have routes to the plain LANs only, never to another
store, so stores cannot reach each other, as shops behind NAT cannot; plain LANs reach each
other and every store through the core.

Uplink-specific LANs. A plain LAN made with `only_over="lte"` stands for HQ's addresses on
the network behind an LTE router: store routers route to it over their `lte` uplink only
(a store without one has no route to it), and the core routes its traffic to stores by
source address (`ip rule from <LAN>` to a table of its own) over each store's `lte`
uplink only, so both directions take the same uplink. With that uplink cut there is no
route at either end: the store router answers a till "network unreachable", the core
answers HQ "no route to host", at once, while the LAN of another uplink still works.
Routers filter by reverse path (strict `rp_filter`): a packet that comes in over a link
other than the one its source is routed by is dropped, as ISPs drop it.

"Unreachable" is an ICMP answer, and the kernel limits those: routers here lift the limit
per host (`icmp_ratelimit=0`), but its limit on route errors is one for the machine, not
per namespace (`net.ipv4.route.error_cost`/`error_burst`, left alone): a router answers a
source about 5 times in a burst, then once a second, and a connect it does not answer
times out. A test that needs "unreachable" probes a few times, not in a loop.

Hosts on several LANs. A host's default route is via its first LAN's gateway; on several
LANs, it also routes by source address (a table per LAN: that LAN, a default via its
gateway, else unreachable), so a reply from its address on a LAN leaves by that LAN's
cable, the way its request came. Without that, a reply from HQ's LTE-side address would
leave by its WAN-side cable and the core would drop it (and with that cable cut, it would
find no route at all).

A cut is the switch end of a cable going down: the host keeps its interface and addresses
(its processes keep their bound sockets) and sees NO-CARRIER. Like every namespace here, it
then ignores routes over that link, so its own connects fail at once while a peer's
connects to it time out.

Teardown stops every process inside the run's namespaces by PID (the ones `popen` started
and any other, e.g. a nats-server a till spawned), then deletes the namespaces. A run killed
before its teardown leaves namespaces behind: `remove_stale()` (run by the `netns` fixtures,
or `python -m tests.netkit --clean`) deletes those of runs whose process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

__all__ = [
    "KIT",
    "Host",
    "Lan",
    "NetkitError",
    "Network",
    "Port",
    "Store",
    "first_line",
    "leftovers",
    "netns_unavailable",
    "remove_stale",
]

KIT = "tmk"  # every name this kit gives starts with it
IFNAMSIZ = 15  # Linux's longest interface name
NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins a namespace
CMD_TIMEOUT = 10.0  # one `ip` command; they take milliseconds
STATE_TIMEOUT = 3.0  # a link to report its new carrier state
STOP_TIMEOUT = 5.0  # a process to exit after SIGTERM, before SIGKILL
PROBE_SLACK = 5.0  # a probe's interpreter start-up, on top of its connect timeout
UPLINK_POOL = "10.77.240.0/20"  # store uplinks' /30s are cut from it
TABLES = 100  # the first routing table (and rule priority) of routes by source address
LAST = 4000  # metric of an `unreachable` route: taken when no route with carrier is left
ROUTER_SYSCTLS = [
    "net.ipv4.ip_forward=1",
    "net.ipv4.conf.all.rp_filter=1",  # strict: a packet must come in where its source is routed
    "net.ipv4.icmp_ratelimit=0",  # "unreachable" to a host every time, not 1 a second
]
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
# `tmk<pid><letter>-<name>` for namespaces, `tmk<pid><letter><h|s|b><n>` for interfaces
RUN_NS = re.compile(rf"^({KIT}(\d+)[a-z])-")
RUN_LINK = re.compile(rf"^({KIT}(\d+)[a-z])[hsb]\d+$")
SWITCH = "switch"
CORE = "core"

# A TCP connect from inside a namespace, from a source address if one is given; the reason
# on stderr when it fails.
PROBE = """\
import socket, sys
source = (sys.argv[4], 0) if len(sys.argv) > 4 else None
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), float(sys.argv[3]), source).close()
except OSError as e:
    sys.exit(f"{type(e).__name__}: {e}")
"""
# A TCP listener that accepts and closes; says "listening" once bound.
LISTENER = """\
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""

_OPEN: set[str] = set()  # prefixes of this process's networks not yet closed


class NetkitError(RuntimeError):
    """An `ip` command failed, or the kit could not leave the machine clean."""


# --- commands -------------------------------------------------------------------------------


def _ip(*args: str, ns: str | None = None) -> str:
    """Run `ip [-n ns] args`; its stdout, or NetkitError with the command and its stderr."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    try:
        done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except FileNotFoundError:
        raise NetkitError("the `ip` command is missing (install iproute2)") from None
    except subprocess.CalledProcessError as e:
        raise NetkitError(f"`{' '.join(argv)}` failed: {e.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise NetkitError(f"`{' '.join(argv)}` took over {CMD_TIMEOUT}s") from None
    return done.stdout


def _in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside `ns` (`ip netns exec` execs it: the PID is the command's own)."""
    return ["ip", "netns", "exec", ns, *argv]


def _sysctl(ns: str, *settings: str) -> None:
    # sysctls under net/ are per namespace: they must be written from inside it
    _ip("netns", "exec", ns, "sysctl", "-qw", *settings)


def _namespaces() -> list[str]:
    """Every named namespace on the machine (`ip netns list` prints `name (id: 3)`)."""
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _root_links() -> list[str]:
    """Names of the root namespace's interfaces (`3: name@peer: <...`)."""
    return [line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link").splitlines()]


def _netns_pids(ns: str) -> list[int]:
    try:
        return [int(pid) for pid in _ip("netns", "pids", ns).split()]
    except NetkitError:
        return []  # already gone


# --- processes ------------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """Exited; a zombie counts (it holds no namespace, and init may be slow to reap it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until every pid is gone; the ones still alive after `timeout`."""
    alive = list(pids)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if not _gone(pid)]
    return alive


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _stop(pids: Iterable[int]) -> list[int]:
    """SIGCONT + SIGTERM, wait, SIGKILL the rest, wait; the PIDs that would not die."""
    alive = [pid for pid in pids if not _gone(pid)]
    for pid in alive:
        _signal(pid, signal.SIGCONT)  # a stopped process would sit on its SIGTERM
        _signal(pid, signal.SIGTERM)
    alive = _wait_gone(alive, STOP_TIMEOUT)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return _wait_gone(alive, STOP_TIMEOUT)


def first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """What `proc` wrote to its stdout pipe by the end of its first line, its exit, or
    `timeout`, whichever comes first."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # exited
            data += chunk
    return data.decode(errors="replace")


# --- stale runs -----------------------------------------------------------------------------


def _run_alive(prefix: str, pid: int, made: float | None) -> bool:
    """Whether run `prefix` (of process `pid`) still runs: its process lives, and is not a
    newer process that got the pid of a dead run, i.e. started after the run made a thing
    at `made` (a timestamp, when known)."""
    if pid == os.getpid():
        return prefix in _OPEN
    try:
        owner = psutil.Process(pid)
        if owner.status() == psutil.STATUS_ZOMBIE:
            return False
        started = owner.create_time()
    except psutil.NoSuchProcess:
        return False
    return made is None or started <= made + 2  # create_time is precise to about a second


def _made(ns: str) -> float | None:
    """When namespace `ns` was made (its pin's time), None if unknown."""
    try:
        return (NETNS_DIR / ns).stat().st_mtime
    except OSError:
        return None


def _stale_namespaces() -> list[str]:
    stale = []
    for ns in _namespaces():
        m = RUN_NS.match(ns)
        if m and not _run_alive(m[1], int(m[2]), _made(ns)):
            stale.append(ns)
    return stale


def _stale_links() -> list[str]:
    """Interfaces of dead runs in the root namespace. This kit never makes any, but a run of
    an older kit, or a person, may have; they go like the namespaces."""
    stale = []
    for name in _root_links():
        m = RUN_LINK.match(name)
        if m and not _run_alive(m[1], int(m[2]), None):
            stale.append(name)
    return stale


def _purge(ns: str) -> list[int]:
    """Stop every process in `ns`, delete it; the PIDs that would not die."""
    left = _stop(_netns_pids(ns))
    with contextlib.suppress(NetkitError):  # someone else deleted it meanwhile
        _ip("netns", "del", ns)
    return left


def remove_stale() -> list[str]:
    """Delete what runs of this kit that are no longer running left behind (namespaces, with
    every process inside them, and interfaces); what was removed. Live runs, in this process
    or another, are left alone."""
    removed = []
    for ns in _stale_namespaces():
        left = _purge(ns)
        removed.append(f"namespace {ns}" + (f" (pids {left} would not die)" if left else ""))
    for name in _stale_links():
        with contextlib.suppress(NetkitError):
            _ip("link", "del", name)
            removed.append(f"link {name}")
    return removed


def leftovers(prefix: str = KIT) -> list[str]:
    """Namespaces and root-namespace interfaces on the machine whose name starts with
    `prefix` (the kit's own mark by default; a network's `prefix` for one run)."""
    found = [f"namespace {ns}" for ns in _namespaces() if ns.startswith(prefix)]
    found += [f"link {name}" for name in _root_links() if name.startswith(prefix)]
    return found


def _new_prefix() -> str:
    """`tmk<pid><letter>`: unique on the machine while this process has fewer than 26
    networks open at once."""
    for letter in "abcdefghijklmnopqrstuvwxyz":
        prefix = f"{KIT}{os.getpid()}{letter}"
        if prefix not in _OPEN:
            return prefix
    raise NetkitError("26 networks open in one process: close one first")


def _ipv4_subnet(subnet: str, what: str) -> IPv4Network:
    net = ipaddress.ip_network(subnet)
    if not isinstance(net, IPv4Network):
        raise ValueError(f"{what}: {subnet} is not an IPv4 subnet")
    return net


# --- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Port:
    """One cable: `inside` is the host's interface, `outside` its bridge port."""

    host: str
    lan: str
    inside: str
    outside: str
    address: IPv4Address


@dataclass
class Lan:
    """A bridge and its ports. `router` is the host that routes it (the core, or a store's
    router) from its first address, `gateway`; an uplink has neither."""

    name: str
    subnet: IPv4Network
    bridge: str
    router: str | None
    ports: dict[str, Port] = field(default_factory=dict)  # by host name
    only_over: str | None = None  # a core LAN stores reach over this uplink only
    split_bridge: str | None = None  # while split (`Network.split`): the far half's bridge

    @property
    def gateway(self) -> IPv4Address | None:
        return self.subnet.network_address + 1 if self.router else None

    @property
    def uplink(self) -> bool:
        return self.router is None


class Host:
    """One machine: a namespace and its cables. Made by `Network.host`."""

    def __init__(self, net: Network, name: str) -> None:
        self.net, self.name = net, name
        self.ns = f"{net.prefix}-{name}"
        self.ports: dict[str, Port] = {}  # by LAN name, in the order given
        self._procs: list[subprocess.Popen[bytes]] = []

    def __repr__(self) -> str:
        return (
            f"Host({self.name!r}, {', '.join(f'{p.lan}={p.address}' for p in self.ports.values())})"
        )

    def address(self, lan: str | None = None) -> str:
        """The host's address on `lan` (its first LAN by default)."""
        port = self.ports[lan] if lan else next(iter(self.ports.values()))
        return str(port.address)

    # --- processes ----------------------------------------------------------------------

    @property
    def exec_prefix(self) -> list[str]:
        """Put before a command to run it here, e.g. as a `Mesh` `wrap`; teardown stops
        whatever runs in the namespace, started this way or not."""
        return _in_ns(self.ns, [])

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """`argv` started inside this host (stdin closed, its own session), stopped by PID at
        teardown."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)  # a terminal's ^C reaches pytest only
        proc: subprocess.Popen[bytes] = subprocess.Popen(_in_ns(self.ns, argv), **kwargs)
        self._procs.append(proc)
        return proc

    def listen(
        self, port: int, address: str | None = None, timeout: float = 5.0
    ) -> subprocess.Popen[bytes]:
        """A TCP listener on `address` (the host's first address by default), accepting and
        closing connections; returns once it is bound."""
        address = address or self.address()
        proc = self.popen(
            [sys.executable, "-I", "-S", "-c", LISTENER, address, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        said = first_line(proc, timeout)
        assert proc.stdout is not None
        if said != "listening\n":
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)  # a failing listener exits by itself: let it finish
            _stop([proc.pid])  # a hung one does not
            said += proc.stdout.read().decode(errors="replace")  # the rest of a traceback
            proc.stdout.close()
            proc.wait()
            raise NetkitError(f"no listener on {self.name} {address}:{port}: {said[-800:]}")
        proc.stdout.close()  # it says nothing more
        return proc

    def pids(self) -> list[int]:
        """Every process inside this host's namespace."""
        return _netns_pids(self.ns)

    # --- the network, as this host sees it ----------------------------------------------

    async def connect_error(
        self, address: str, port: int, timeout: float = 1.0, source: str | None = None
    ) -> str | None:
        """Try a TCP connect from this host (from its address `source`, else the one its
        route picks): None when it connects, else the reason (e.g. `OSError: [Errno 101]
        Network is unreachable`, `TimeoutError: timed out`)."""
        argv = [sys.executable, "-I", "-S", "-c", PROBE, address, str(port), str(timeout)]
        argv += [source] if source else []
        proc = await asyncio.create_subprocess_exec(
            *_in_ns(self.ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout + PROBE_SLACK)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return f"the probe itself hung for {timeout + PROBE_SLACK}s"
        if proc.returncode == 0:
            return None
        return out.decode(errors="replace").strip() or f"probe exited {proc.returncode}"

    async def can_reach(
        self, address: str, port: int, timeout: float = 1.0, source: str | None = None
    ) -> bool:
        """Whether a TCP connect from this host to `address`:`port` succeeds in `timeout`."""
        return await self.connect_error(address, port, timeout, source) is None

    def route(self, address: str, source: str | None = None) -> str | None:
        """The LAN this host would send to `address` over ("lo" for its own addresses),
        from its address `source` if given (a reply from there), or None when it has no
        usable route."""
        sent_from = ["from", source] if source else []
        try:
            out = _ip("-o", "route", "get", address, *sent_from, ns=self.ns)
        except NetkitError as e:
            if "unreachable" in str(e) or "No route to host" in str(e):
                return None
            raise
        dev = out.split(" dev ", 1)[1].split()[0]
        return next((p.lan for p in self.ports.values() if p.inside == dev), dev)

    # --- cables -------------------------------------------------------------------------

    def cut(self, lan: str | None = None) -> None:
        """Unplug this host from `lan` (from every LAN by default)."""
        self.net._set(self._ports(lan), up=False)

    def restore(self, lan: str | None = None) -> None:
        """Plug this host back into `lan` (every LAN by default)."""
        self.net._set(self._ports(lan), up=True)

    def _ports(self, lan: str | None) -> list[Port]:
        if lan is None:
            return list(self.ports.values())
        if lan not in self.ports:
            raise ValueError(f"{self.name} is not on {lan} (it is on {sorted(self.ports)})")
        return [self.ports[lan]]


@dataclass
class Store:
    """A store's LAN, its router, and the router's uplinks to the core, preferred first."""

    net: Network
    name: str
    lan: Lan
    router: Host
    uplinks: dict[str, Lan]  # by uplink name ("wan"), in order of preference

    def cut(self, uplink: str | None = None) -> None:
        """Take the store's `uplink` down (every uplink by default), at both ends."""
        self.net._set(self._ports(uplink), up=False)

    def restore(self, uplink: str | None = None) -> None:
        """Bring the store's `uplink` back (every uplink by default)."""
        self.net._set(self._ports(uplink), up=True)

    def _ports(self, uplink: str | None) -> list[Port]:
        if uplink is not None and uplink not in self.uplinks:
            raise ValueError(f"{self.name} has no uplink {uplink} (has {list(self.uplinks)})")
        links = [self.uplinks[uplink]] if uplink else list(self.uplinks.values())
        return [port for link in links for port in link.ports.values()]


# --- the network ----------------------------------------------------------------------------


class Network:
    """Hosts, LANs and stores of one test run; `with Network() as net:` (or `async with`)
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
            raise NetkitError(f"network {self.prefix} is open already")
        self.prefix = _new_prefix()
        _OPEN.add(self.prefix)
        self._opened = True
        try:
            for ns in [n for n in _namespaces() if n.startswith(f"{self.prefix}-")]:
                _purge(ns)  # a dead process with our pid left them
            self.switch = self._namespace(SWITCH)
            self.core = self._host(CORE, router=True)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process in the run's namespaces by PID, delete the namespaces; then
        NetkitError if anything is left."""
        if not self._opened:
            return
        self._opened = False
        tracked = [p.pid for host in self.hosts.values() for p in host._procs]
        inside = [pid for ns in self._namespaces for pid in _netns_pids(ns)]
        survivors = _stop(dict.fromkeys([*tracked, *inside]))
        for host in self.hosts.values():
            for proc in host._procs:  # reap our children (a Popen left running warns)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=1)
        problems = []
        for ns in reversed(self._namespaces):
            try:
                _ip("netns", "del", ns)
            except NetkitError as e:
                problems.append(str(e))
        _OPEN.discard(self.prefix)
        problems += leftovers(self.prefix)
        problems += [f"process {pid} would not die" for pid in survivors]
        if problems:
            raise NetkitError(f"network {self.prefix} left: {'; '.join(problems)}")

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
            _ip("rule", "add", *rule, "priority", str(TABLES), ns=self.core.ns)
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
                raise NetkitError(f"the uplink pool {self._uplink_pool} is used up") from None
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
        _ip("route", "add", "default", "via", str(gateway), ns=host.ns)
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
            raise NetkitError(f"LAN {lan} is split already: join it first")
        far = [the_lan.ports[h] for h in hosts]  # KeyError: not on that LAN
        bridge = f"{self.prefix}b{self._next_iface()}"
        _ip("link", "add", bridge, "type", "bridge", ns=self.switch)
        _ip("link", "set", bridge, "alias", f"{lan}-far", "up", ns=self.switch)
        the_lan.split_bridge = bridge
        for port in far:
            _ip("link", "set", port.outside, "master", bridge, ns=self.switch)

    def join(self, lan: str) -> None:
        """Undo `split`: every cable of `lan` on its one bridge again."""
        the_lan = self.lans[lan]
        if the_lan.split_bridge is None:
            return
        for port in the_lan.ports.values():
            _ip("link", "set", port.outside, "master", the_lan.bridge, ns=self.switch)
        _ip("link", "del", the_lan.split_bridge, ns=self.switch)
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
        _ip("netns", "add", ns)
        self._namespaces.append(ns)
        _ip("link", "set", "lo", "up", ns=ns)  # processes bind 127.0.0.1 too
        # a link without carrier is no route: fail over (routers), fail fast (hosts)
        _sysctl(ns, "net.ipv4.conf.all.ignore_routes_with_linkdown=1")
        return ns

    def _host(self, name: str, *, router: bool) -> Host:
        self._assert_open()
        if not NAME.match(name) or name == SWITCH:
            raise ValueError(f"bad host name {name!r}: lowercase, digits, '-'; not {SWITCH}")
        if name in self.hosts:
            raise ValueError(f"host {name} exists already")
        host = self.hosts[name] = Host(self, name)
        self._namespace(name)
        if router:
            _sysctl(host.ns, *ROUTER_SYSCTLS)
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
        _ip("link", "add", bridge, "type", "bridge", ns=self.switch)
        _ip("link", "set", bridge, "alias", name, "up", ns=self.switch)
        lan = self.lans[name] = Lan(name, subnet, bridge, router)
        return lan

    def _plug(self, host: Host, lan: Lan, address: IPv4Address | None) -> Port:
        """A veth cable from `host` to `lan`'s bridge, `address` on the host's end."""
        assert address is not None
        n = self._next_iface()
        inside, outside = f"{self.prefix}h{n}", f"{self.prefix}s{n}"
        _ip(
            "link", "add", "name", inside, "netns", host.ns,
            "type", "veth", "peer", "name", outside, "netns", self.switch,
        )  # fmt: skip
        label = f"{host.name}@{lan.name}"
        _ip("link", "set", outside, "master", lan.bridge, "alias", label, "up", ns=self.switch)
        _ip("link", "set", inside, "alias", lan.name, "up", ns=host.ns)
        _ip("addr", "add", f"{address}/{lan.subnet.prefixlen}", "dev", inside, ns=host.ns)
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
            _ip("route", "add", str(dest), "via", str(via), "metric", str(10 * rank), ns=router.ns)

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
            _ip("route", "add", dest, "via", str(via), "metric", "10", *table_, ns=self.core.ns)
        _ip("route", "add", "unreachable", dest, "metric", str(LAST), *table_, ns=self.core.ns)

    def _source_routes(self, host: Host, port: Port, table: int) -> None:
        """`host`'s table for packets from its address on `port`'s LAN: that LAN, the
        rest via its gateway, over no other cable (unreachable while this one is out)."""
        lan, dev, table_ = self.lans[port.lan], port.inside, ["table", str(table)]
        _ip("route", "add", str(lan.subnet), "dev", dev, "src", str(port.address), *table_,
            ns=host.ns)  # fmt: skip
        _ip("route", "add", "default", "via", str(lan.gateway), "dev", dev, *table_, ns=host.ns)
        _ip("route", "add", "unreachable", "default", "metric", str(LAST), *table_, ns=host.ns)
        _ip("rule", "add", "from", str(port.address), *table_, "priority", str(TABLES),
            ns=host.ns)  # fmt: skip

    def _set(self, ports: list[Port], *, up: bool) -> None:
        """Switch ends of `ports` up or down; returns once every host end shows it."""
        for port in ports:
            _ip("link", "set", port.outside, "up" if up else "down", ns=self.switch)
        self._wait_state(ports, "UP" if up else "DOWN")

    def _wait_state(self, ports: list[Port], state: str) -> None:
        """Poll until each host end's operstate is `state`: the kernel sets it in the same
        step as it marks (or clears) the routes over the link, so routing has followed."""
        deadline = time.monotonic() + STATE_TIMEOUT
        for port in ports:
            ns = self.hosts[port.host].ns
            while f" state {state} " not in (line := _ip("-o", "link", "show", port.inside, ns=ns)):
                if time.monotonic() > deadline:
                    raise NetkitError(
                        f"{port.host}@{port.lan} not {state} after {STATE_TIMEOUT}s: {line}"
                    )
                time.sleep(0.01)

    # --- checks -------------------------------------------------------------------------

    def _assert_open(self) -> None:
        if not self._opened:
            raise NetkitError("the network is not open: use `with Network() as net:`")

    def _plain(self) -> list[str]:
        return [name for name, lan in self.lans.items() if not lan.uplink]

    def _next_iface(self) -> int:
        """A number for the next interface names (`<prefix><h|s|b><n>`), if they fit."""
        self._ifaces += 1
        if len(f"{self.prefix}h{self._ifaces}") > IFNAMSIZ:
            raise NetkitError(f"{self._ifaces} interfaces: names would pass {IFNAMSIZ} chars")
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
    """None if this machine lets the kit work (namespaces, bridges, veths, `ip netns exec`),
    else why not, for a test's skip reason. A teardown that leaves something is no reason
    to skip: its NetkitError is raised."""
    hint = "" if os.geteuid() == 0 else " (not root)"
    net = Network()
    try:
        net.open()  # removes what it made if it fails
        net.store("probe", "10.77.0.0/29")
        host = net.host("probe-t1", on={"probe": "10.77.0.2"})
        argv = _in_ns(host.ns, ["true"])
        subprocess.run(argv, check=True, capture_output=True, timeout=CMD_TIMEOUT)
    except (NetkitError, OSError, subprocess.SubprocessError) as e:
        net.close()
        return f"{e}{hint}"
    net.close()
    return None


def main(argv: Sequence[str]) -> int:
    """`python -m tests.netkit [--clean]`: list (or remove) this kit's stale leftovers."""
    if "--clean" in argv:
        for what in remove_stale():
            print(f"removed {what}")
        return 0
    stale = set(_stale_namespaces())
    for what in leftovers():
        name = what.split()[-1]
        print(f"{what} ({'stale' if name in stale else 'live run'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
