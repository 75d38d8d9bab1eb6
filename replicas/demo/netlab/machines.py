"""The lab's parts: a cable (`Port`), a LAN (`Lan`), a machine (`Host`) and a store's
LAN with its router and uplinks (`Store`). `Network` (`network`) makes them; a cut or
a restore asks the network's switch (`Cabling`) to take cables down or up."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Protocol

from replicas.demo.netlab.commands import NetlabError, in_ns, ip, netns_pids
from replicas.demo.netlab.processes import first_line, stop_pids

__all__ = ["Cabling", "Host", "Lan", "Port", "Store"]

PROBE_SLACK = 5.0  # a probe's interpreter start-up, on top of its connect timeout

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


@dataclass(frozen=True)
class Port:
    """One cable: `inside` is the host's interface, `outside` its bridge port."""

    host: str
    lan: str
    inside: str
    outside: str
    address: IPv4Address


class Cabling(Protocol):
    """The network's switch, as a machine or store sees it: where cables are unplugged."""

    def set_ports(self, ports: list[Port], *, up: bool) -> None: ...


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

    def __init__(self, cabling: Cabling, name: str, ns: str) -> None:
        self.name, self.ns = name, ns
        self.ports: dict[str, Port] = {}  # by LAN name, in the order given
        self.started: list[subprocess.Popen[bytes]] = []  # by `popen`, reaped at teardown
        self._cabling = cabling

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
        """Put before a command to run it here (as `ip netns exec` execs it, the PID is the
        command's own); teardown stops whatever runs in the namespace, started this way
        or not."""
        return in_ns(self.ns, [])

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        """`argv` started inside this host (stdin closed, its own session), stopped by PID at
        teardown."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        kwargs.setdefault("start_new_session", True)  # a terminal's ^C reaches its owner only
        proc: subprocess.Popen[bytes] = subprocess.Popen(in_ns(self.ns, argv), **kwargs)
        self.started.append(proc)
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
            stop_pids([proc.pid])  # a hung one does not
            said += proc.stdout.read().decode(errors="replace")  # the rest of a traceback
            proc.stdout.close()
            proc.wait()
            raise NetlabError(f"no listener on {self.name} {address}:{port}: {said[-800:]}")
        proc.stdout.close()  # it says nothing more
        return proc

    def pids(self) -> list[int]:
        """Every process inside this host's namespace."""
        return netns_pids(self.ns)

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
            *in_ns(self.ns, argv),
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
            out = ip("-o", "route", "get", address, *sent_from, ns=self.ns)
        except NetlabError as e:
            if "unreachable" in str(e) or "No route to host" in str(e):
                return None
            raise
        dev = out.split(" dev ", 1)[1].split()[0]
        return next((p.lan for p in self.ports.values() if p.inside == dev), dev)

    # --- cables -------------------------------------------------------------------------

    def cut(self, lan: str | None = None) -> None:
        """Unplug this host from `lan` (from every LAN by default)."""
        self._cabling.set_ports(self._ports(lan), up=False)

    def restore(self, lan: str | None = None) -> None:
        """Plug this host back into `lan` (every LAN by default)."""
        self._cabling.set_ports(self._ports(lan), up=True)

    def _ports(self, lan: str | None) -> list[Port]:
        if lan is None:
            return list(self.ports.values())
        if lan not in self.ports:
            raise ValueError(f"{self.name} is not on {lan} (it is on {sorted(self.ports)})")
        return [self.ports[lan]]


@dataclass
class Store:
    """A store's LAN, its router, and the router's uplinks to the core, preferred first."""

    cabling: Cabling
    name: str
    lan: Lan
    router: Host
    uplinks: dict[str, Lan]  # by uplink name ("wan"), in order of preference

    def cut(self, uplink: str | None = None) -> None:
        """Take the store's `uplink` down (every uplink by default), at both ends."""
        self.cabling.set_ports(self._ports(uplink), up=False)

    def restore(self, uplink: str | None = None) -> None:
        """Bring the store's `uplink` back (every uplink by default)."""
        self.cabling.set_ports(self._ports(uplink), up=True)

    def _ports(self, uplink: str | None) -> list[Port]:
        if uplink is not None and uplink not in self.uplinks:
            raise ValueError(f"{self.name} has no uplink {uplink} (has {list(self.uplinks)})")
        links = [self.uplinks[uplink]] if uplink else list(self.uplinks.values())
        return [port for link in links for port in link.ports.values()]
