"""The emulated network (replicas/demo/netlab/) on real namespaces: hosts reach each other
over the cables the lab made and only over those, a cut cable or uplink stops traffic and a
restored one carries it again, a store fails over from WAN to LTE, a LAN reached only over
one uplink is reached over that one only (both ways), a host on two LANs replies by the
cable the request came in by, and nothing outlives a network (nor a killed run, once
`remove_stale` has run)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from replicas.demo.netlab.commands import NetlabError
from replicas.demo.netlab.machines import Host
from replicas.demo.netlab.network import Network
from replicas.demo.netlab.runs import KIT, NETNS_DIR, leftovers, remove_stale
from tests.unprivileged import run_unprivileged

PORT = 4222
HQ = "10.77.100.10"
CUT = 0.5  # connect timeout where a connect must fail: a cut link drops, it does not refuse
HQ_WAN, HQ_LTE, OPS = "10.77.100.11", "10.77.101.11", "10.77.102.10"  # uplink_site's
T1 = "10.77.1.11"


def site(net: Network, *stores: str) -> tuple[Host, dict[str, Host]]:
    """HQ on the core's `dc` LAN, listening; per store `sN`, one till `sN-t1` at .11."""
    net.lan("dc", "10.77.100.0/24")
    hq = net.host("hq", on={"dc": HQ})
    hq.listen(PORT)
    tills = {}
    for n, store in enumerate(stores, start=1):
        net.store(store, f"10.77.{n}.0/24")
        tills[store] = net.host(f"{store}-t1", on={store: f"10.77.{n}.11"})
    return hq, tills


def uplink_site(net: Network) -> tuple[Host, Host]:
    """HQ node `hq1` on `dc` (reached over WAN only) and `dc-lte` (over LTE only), `ops` on
    a plain LAN, each listening on every address; store s1 (WAN, LTE) with till s1-t1
    listening, store s2 (WAN only) with s2-t1. LANs and stores are made interleaved, so
    routes come both from a new LAN to the stores and from a new store to the LANs."""
    net.lan("dc", "10.77.100.0/24", only_over="wan")
    net.store("s1", "10.77.1.0/24")
    net.lan("dc-lte", "10.77.101.0/24", only_over="lte")
    net.lan("ops", "10.77.102.0/24")
    net.store("s2", "10.77.2.0/24", uplinks=["wan"])
    hq = net.host("hq1", on={"dc": HQ_WAN, "dc-lte": HQ_LTE})
    hq.listen(PORT, HQ_WAN)
    hq.listen(PORT, HQ_LTE)
    net.host("ops", on={"ops": OPS}).listen(PORT)
    t1 = net.host("s1-t1", on={"s1": T1})
    t1.listen(PORT)
    net.host("s2-t1", on={"s2": "10.77.2.11"}).listen(PORT)
    return hq, t1


def outcome(error: str | None) -> str:
    """ "ok", "unreachable" (refused at once by a router with no route), or the error."""
    if error is None:
        return "ok"
    return "unreachable" if "unreachable" in error or "No route to host" in error else error


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_inside(ns: str, pids: list[int], timeout: float = 5.0) -> None:
    """Until `ip netns exec` has moved every one of `pids` into namespace `ns`."""
    deadline = time.monotonic() + timeout
    while not set(pids) <= set(inside := _pids_in(ns)):
        assert time.monotonic() < deadline, f"{pids} not in {ns}: {inside}"
        time.sleep(0.01)


def _pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True)
    return [int(pid) for pid in out.stdout.split()]


def _holders(inodes: set[int]) -> list[int]:
    """PIDs of processes whose network namespace is one of `inodes`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.stat(entry / "ns" / "net").st_ino in inodes:
                    found.append(int(entry.name))
            except OSError:
                continue  # exited meanwhile
    return found


# --- reaching ----------------------------------------------------------------------------


async def test_two_hosts_on_a_lan_reach_each_other(netns: Network) -> None:
    netns.store("s1", "10.77.1.0/24")
    t1 = netns.host("s1-t1", on={"s1": "10.77.1.11"})
    t2 = netns.host("s1-t2", on={"s1": "10.77.1.12"})
    t2.listen(PORT)  # on t2's own address
    t1.listen(PORT)
    assert await t1.connect_error("10.77.1.12", PORT) is None
    assert await t2.connect_error("10.77.1.11", PORT) is None
    error = await t1.connect_error("10.77.1.12", PORT + 1)  # the probe can fail
    assert error is not None and "refused" in error


async def test_each_host_has_its_own_loopback_and_addresses(netns: Network) -> None:
    netns.store("s1", "10.77.1.0/24")
    t1 = netns.host("s1-t1", on={"s1": "10.77.1.11"})
    t2 = netns.host("s1-t2", on={"s1": "10.77.1.12"})
    t1.listen(PORT, "127.0.0.1")
    assert await t1.can_reach("127.0.0.1", PORT)
    assert not await t2.can_reach("127.0.0.1", PORT)  # t2's loopback is up, and t2's own
    assert not await t2.can_reach("10.77.1.11", PORT)  # bound to t1's loopback only
    with pytest.raises(NetlabError, match="assign requested address"):
        t1.listen(PORT, "10.77.1.12")  # t2's address is not t1's


async def test_a_cut_cable_stops_traffic_and_a_restored_one_carries_it(netns: Network) -> None:
    netns.store("s1", "10.77.1.0/24")
    t1 = netns.host("s1-t1", on={"s1": "10.77.1.11"})
    t2 = netns.host("s1-t2", on={"s1": "10.77.1.12"})
    t2.listen(PORT)
    t2.cut("s1")
    error = await t1.connect_error("10.77.1.12", PORT, CUT)
    assert error is not None and "timed out" in error, error  # t2 is silent, not refusing
    t2.restore("s1")
    assert await t1.connect_error("10.77.1.12", PORT) is None
    t1.cut()
    error = await t1.connect_error("10.77.1.12", PORT, CUT)  # t1 sees no carrier: at once
    assert error is not None and "unreachable" in error, error
    t1.restore()
    assert await t1.connect_error("10.77.1.12", PORT) is None


async def test_a_split_lan_keeps_each_half_together_and_apart(netns: Network) -> None:
    netns.store("s1", "10.77.1.0/24")
    t1, t2, t3 = (netns.host(f"s1-t{k}", on={"s1": f"10.77.1.1{k}"}) for k in (1, 2, 3))
    for till in (t1, t2, t3):
        till.listen(PORT)
    netns.split("s1", ["s1-t2", "s1-t3"])  # the router stays with t1
    assert await t2.connect_error("10.77.1.13", PORT) is None  # t2, t3: one half
    error = await t1.connect_error("10.77.1.12", PORT, CUT)
    assert error is not None and "timed out" in error, error  # no carrier lost: silence
    near, far = [await t.connect_error("10.77.1.1", PORT, CUT) for t in (t1, t2)]  # the gw
    assert near is not None and "refused" in near, near  # it answers t1: nothing listens
    assert far is not None and "timed out" in far, far  # t2's half has no router
    netns.join("s1")
    assert await t1.connect_error("10.77.1.12", PORT) is None
    assert await t3.connect_error("10.77.1.11", PORT) is None


# --- stores ------------------------------------------------------------------------------


async def test_a_store_fails_over_from_wan_to_lte_and_back(netns: Network) -> None:
    """The till keeps one HQ address; the store router and the core both move to LTE
    when WAN loses carrier (routes ranked by metric, linkdown routes ignored), so the
    till's connects to HQ go on working. With both uplinks cut the store router answers
    unreachable; healed, traffic is back on WAN. Another store is not affected."""
    _, tills = site(netns, "s1", "s2")
    s1, gw, core, t1 = netns.stores["s1"], netns["s1-gw"], netns.core, tills["s1"]

    async def path() -> tuple[str | None, str | None, str | None]:
        """Uplink the store router uses to HQ, the core back to the till, and the till's
        connect error to HQ."""
        return gw.route(HQ), core.route("10.77.1.11"), await t1.connect_error(HQ, PORT, CUT)

    assert await path() == ("s1-wan", "s1-wan", None)
    s1.cut("wan")
    assert await path() == ("s1-lte", "s1-lte", None)
    s1.cut("lte")
    r_gw, r_core, error = await path()
    assert (r_gw, r_core) == (None, None)
    assert error is not None and "unreachable" in error, error
    assert await tills["s2"].connect_error(HQ, PORT) is None  # s2's uplinks are its own
    s1.restore("lte")
    assert await path() == ("s1-lte", "s1-lte", None)
    s1.restore()
    assert await path() == ("s1-wan", "s1-wan", None)


async def test_a_lan_reached_only_over_one_uplink_is_out_at_once_when_it_is(
    netns: Network,
) -> None:
    """HQ's WAN-side address works while the store's WAN does, its LTE-side address while
    its LTE does, whatever the other uplink does; from the till and from HQ (whose traffic
    from an address takes that address's uplink too). A plain LAN still fails over."""
    hq, t1 = uplink_site(netns)
    s1, gw = netns.stores["s1"], netns["s1-gw"]

    async def paths() -> tuple[str, ...]:
        """t1 to HQ's WAN and LTE addresses, HQ to t1 from each, t1 to the plain LAN."""
        errors = await asyncio.gather(
            t1.connect_error(HQ_WAN, PORT, CUT),
            t1.connect_error(HQ_LTE, PORT, CUT),
            hq.connect_error(T1, PORT, CUT, source=HQ_WAN),
            hq.connect_error(T1, PORT, CUT, source=HQ_LTE),
            t1.connect_error(OPS, PORT, CUT),
        )
        return tuple(outcome(error) for error in errors)

    ok, out = "ok", "unreachable"
    assert (gw.route(HQ_WAN), gw.route(HQ_LTE), gw.route(OPS)) == ("s1-wan", "s1-lte", "s1-wan")
    assert await paths() == (ok, ok, ok, ok, ok)
    s1.cut("wan")
    assert (gw.route(HQ_WAN), gw.route(HQ_LTE), gw.route(OPS)) == (None, "s1-lte", "s1-lte")
    assert await paths() == (out, ok, out, ok, ok)
    s1.restore("wan")
    s1.cut("lte")
    assert await paths() == (ok, out, ok, out, ok)
    s1.cut()
    assert await paths() == (out, out, out, out, out)
    s1.restore()
    assert await paths() == (ok, ok, ok, ok, ok)


async def test_a_store_without_the_uplink_does_not_reach_its_lan(netns: Network) -> None:
    hq, _ = uplink_site(netns)
    s2_t1 = netns["s2-t1"]
    assert netns["s2-gw"].route(HQ_LTE) is None
    assert outcome(await s2_t1.connect_error(HQ_LTE, PORT, CUT)) == "unreachable"
    assert outcome(await hq.connect_error("10.77.2.11", PORT, CUT, source=HQ_LTE)) == "unreachable"
    assert await s2_t1.connect_error(HQ_WAN, PORT) is None
    assert await s2_t1.connect_error(OPS, PORT) is None


async def test_a_host_on_two_lans_replies_by_the_cable_the_request_came_in(
    netns: Network,
) -> None:
    """A reply from HQ's LTE-side address leaves by its LTE-side cable, not by its default
    route's (the core would drop it there: its source is routed the other way); so with
    the WAN-side cable pulled, the LTE-side address still answers, and the other way."""
    hq, t1 = uplink_site(netns)
    assert (hq.route(T1), hq.route(T1, source=HQ_LTE)) == ("dc", "dc-lte")
    hq.cut("dc")
    assert outcome(await t1.connect_error(HQ_WAN, PORT, CUT)) != "ok"
    assert await t1.connect_error(HQ_LTE, PORT) is None
    assert await hq.connect_error(T1, PORT, source=HQ_LTE) is None
    hq.restore("dc")
    hq.cut("dc-lte")
    assert await t1.connect_error(HQ_WAN, PORT) is None
    error = await hq.connect_error(T1, PORT, CUT, source=HQ_LTE)  # not out by another cable
    assert outcome(error) == "unreachable", error


async def test_a_reply_by_the_wrong_cable_is_lost(netns: Network) -> None:
    """What the source routes are for: without hq1's rule for its LTE-side address, its
    reply from there leaves by its WAN-side cable and the core drops it (strict reverse-path
    filter), as an ISP drops a packet with another network's source."""
    hq, t1 = uplink_site(netns)
    subprocess.run([*hq.exec_prefix, "ip", "rule", "del", "from", HQ_LTE], check=True)
    assert hq.route(T1, source=HQ_LTE) == "dc"
    error = await t1.connect_error(HQ_LTE, PORT, CUT)
    assert error is not None and "timed out" in error, error


async def test_hq_reaches_every_store_and_stores_not_each_other(netns: Network) -> None:
    hq, tills = site(netns, "s1", "s2")
    for till in tills.values():
        till.listen(PORT)
    assert await hq.connect_error("10.77.1.11", PORT) is None
    assert await hq.connect_error("10.77.2.11", PORT) is None
    for a, b in [("s1", "s2"), ("s2", "s1")]:
        error = await tills[a].connect_error(tills[b].address(), PORT, CUT)
        assert error is not None and "unreachable" in error, error  # a's router: no route
        assert netns[f"{a}-gw"].route(tills[b].address()) is None


# --- cleaning up -------------------------------------------------------------------------


@pytest.mark.parametrize("body_raises", [False, True])
def test_teardown_leaves_nothing(netns_ready: list[str], body_raises: bool) -> None:
    """Namespaces, interfaces (they die with a namespace no process holds) and processes:
    one `popen` started, one stopped by SIGSTOP, one started around the kit."""

    class Body(Exception):
        pass

    pids: list[int] = []
    with pytest.raises(Body) if body_raises else contextlib.nullcontext(), Network() as net:
        _, tills = site(net, "s1")
        t1 = tills["s1"]
        pids += [t1.popen(["sleep", "60"]).pid, t1.popen(["sleep", "60"]).pid]
        _wait_inside(t1.ns, pids)
        os.kill(pids[-1], signal.SIGSTOP)
        started = subprocess.run(  # a grandchild the kit was never told of
            [*t1.exec_prefix, "sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        )
        pids.append(int(started.stdout))
        pids += net["hq"].pids()  # the listener
        assert set(pids) <= set(t1.pids()) | set(net["hq"].pids())
        prefix, inodes = net.prefix, {os.stat(NETNS_DIR / ns).st_ino for ns in net.namespaces}
        assert leftovers(prefix)
        if body_raises:
            raise Body
    assert leftovers(prefix) == []
    assert [pid for pid in pids if not _gone(pid)] == []
    assert _holders(inodes) == []


def test_remove_stale_removes_dead_runs_only(netns: Network) -> None:
    """Two runs of other processes left namespaces (one with a bridge, a veth and a process
    inside) and a root interface; `netns` is this process's live run. Nothing goes while
    the runs' processes live; once one dies, its leftovers go and nothing else does.

    The leftovers belong to live processes while they are made: a `pytest` running at the
    same time removes stale leftovers too, and would take them away half made."""
    netns.store("s1", "10.77.1.0/24")
    owners = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
    dying, live = (f"{KIT}{owner.pid}a" for owner in owners)
    made = [f"{dying}-x", f"{dying}-y", f"{live}-x"]
    sleeper = None
    try:
        for ns in made:
            subprocess.run(["ip", "netns", "add", ns], check=True)
        ip = ["ip", "-n", f"{dying}-x", "link", "add"]
        subprocess.run([*ip, f"{dying}b1", "type", "bridge"], check=True)
        peer = ["peer", "name", f"{dying}s2", "netns", f"{dying}-y"]
        subprocess.run([*ip, f"{dying}h2", "type", "veth", *peer], check=True)
        subprocess.run(["ip", "link", "add", f"{dying}b3", "type", "bridge"], check=True)
        sleeper = subprocess.Popen(["ip", "netns", "exec", f"{dying}-x", "sleep", "60"])
        _wait_inside(f"{dying}-x", [sleeper.pid])
        ours = [*leftovers(dying), *leftovers(live), *leftovers(netns.prefix)]

        assert not [what for what in remove_stale() if what in ours]  # every owner lives
        owners[0].kill()
        owners[0].wait()
        removed = remove_stale()

        assert leftovers(dying) == []
        assert sleeper.wait(timeout=5) != 0  # stopped by the cleanup
        assert leftovers(live) == [f"namespace {live}-x"]
        assert len(leftovers(netns.prefix)) == len(netns.namespaces)
        said = {what for what in removed if what in ours}  # all, unless another pytest was
        assert said <= {f"namespace {dying}-x", f"namespace {dying}-y", f"link {dying}b3"}
    finally:
        for proc in [*owners, sleeper]:
            if proc is not None:
                proc.kill()
                proc.wait()
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", f"{dying}b3"], capture_output=True)


def test_without_privileges_the_kit_says_why(shared_dir: Path) -> None:
    """What the `netns` fixture's skip reason says for a user who may not make namespaces;
    the attempt leaves nothing behind."""
    code = (
        "import os; from replicas.demo.netlab.network import netns_unavailable as u; "
        "print(os.getpid(), u())"
    )
    out = run_unprivileged(code, shared_dir)
    assert out.returncode == 0, out.stderr
    pid, reason = out.stdout.strip().split(" ", 1)
    assert reason != "None" and "not root" in reason, reason
    assert leftovers(f"{KIT}{pid}a") == []  # the first network of that process
