"""An emulated network of machines, for `tillmesh demo --lan` and the tests: each host a
Linux network namespace, wired by veth cables to bridges, so every replica runs on a
network stack of its own and a link is cut for real. Needs root and `ip` (iproute2).

    from replicas.demo.netlab.network import Network

    with Network() as net:  # or `async with`; tests: the `netns` fixture, or a skip saying why
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
command line (the demo's fleet does, and the tests' `Mesh` `wrap`).

A `Network` owns everything it creates, and all of it lives inside namespaces named after
the run, `tmk<pid><letter>-<name>` (`tmk` marks the lab, the pid and a letter make the run
unique on the machine; `runs`):

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
before its teardown leaves namespaces behind: `runs.remove_stale()` (run by the demo and
the `netns` fixtures, or `python -m replicas.demo.netlab --clean`) deletes those of runs
whose process is gone.

Modules: `commands` (the `ip` command), `processes` (stopping them by PID), `runs` (run
prefixes, stale runs), `machines` (Port, Lan, Host, Store), `network` (Network), `relay`
(a Unix socket to a TCP address inside a machine: how a process outside reaches one).
"""
