"""Identities against real nats-server processes: clients and leafs by nkey,
routes over mutual TLS with the site CA, the leaf link over TLS as the store.

Refusals are proven by evidence, not by a quiet interval: a forbidden publish is
followed by an allowed one (per-publisher order), and a refused peer is watched
until the server has logged refusing it, with the route/leaf tables checked at
every poll on the way.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.config import ClusterSpec, NkeyUserSpec, ServerConfig, free_port
from broker.identity import Nkey
from broker.server import EmbeddedNatsServer
from broker.subjects import (
    ALL_EVENTS,
    ALL_VV,
    events_subject,
    pull_subject,
    pulls_to,
    vv_subject,
)
from broker.tls import SiteCA, write_tls_files
from tests.broker.kit import (
    Collector,
    ServerPool,
    Site,
    connect_seed,
    hq_config,
    probe_until_seen,
    routed_peers,
    store_configs,
    wait_full_mesh,
    wait_leafs,
    wait_until,
)


async def _quiet(_: Exception) -> None:
    """error_cb for connects expected to fail: nats-py would log a traceback."""


async def _answered_pull(
    requester: Client, responder: Client, target: str, requester_id: str
) -> Msg:
    """``responder`` answers pulls to ``target``; ``requester`` pulls as ``requester_id``
    until answered (a fresh SUB, more so one behind a leaf link, is registered
    asynchronously)."""

    async def answer(msg: Msg) -> None:
        await msg.respond(b"range")

    await responder.subscribe(pulls_to(target), cb=answer)
    replies: list[Msg] = []
    subject = pull_subject(target, requester_id)

    async def answered() -> bool:
        try:
            replies.append(await requester.request(subject, b"pull", timeout=1))
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
            return False
        return True

    await wait_until(answered, f"a pull from {target} answered")
    assert replies[0].data == b"range"
    return replies[0]


async def _connz(srv: EmbeddedNatsServer) -> dict[str, dict[str, object]]:
    """Client and leaf connections by name, with the identity the server verified."""
    connz = await srv.monitor("/connz?auth=1")
    return {c.get("name", ""): c for c in connz.get("connections") or []}


async def test_a_till_connects_by_nkey_and_is_held_to_its_permissions(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    (cfg,) = store_configs(site, "s1", ["t1"], client_tls=True)
    srv = await servers.start(cfg)
    tls = site.client_tls()
    errors: list[Exception] = []
    t1 = await connect_seed(srv, site.seed_file("s1/t1"), "s1/t1", errors, tls)
    t2 = await connect_seed(srv, site.seed_file("s1/t2"), "s1/t2", tls=tls)
    clients += [t1, t2]
    conns = await _connz(srv)
    for rid in ("s1/t1", "s1/t2"):  # known by public key, over TLS
        assert conns[rid]["authorized_user"] == site.keys[rid].public_key
        assert conns[rid]["tls_version"] in ("1.2", "1.3")

    sink = Collector()
    await t2.subscribe("tm.ev.s1.>", cb=sink.on_msg)
    # Not t2.flush(): observed to return before the server had processed t2's SUB
    # (a PONG answering an earlier PING?), so prove the interest with a probe.
    await probe_until_seen(t1, events_subject("s1/t1"), sink)
    await t1.publish(events_subject("s1/t2"), b"forged")
    await t1.publish(events_subject("s1/t1"), b"genuine")
    await sink.wait_for(events_subject("s1/t1"), b"genuine")
    assert sink.count(events_subject("s1/t2")) == 0

    async def reported() -> bool:
        return any('permissions violation for publish to "tm.ev.s1.t2"' in str(e) for e in errors)

    # nats-py hands the server's -ERR to error_cb as nats.errors.Error; the connection
    # stays up.
    await wait_until(reported, "permissions violation reported to error_cb")
    assert t1.is_connected

    # Request/reply still works: t2's reply inbox (_INBOX.s1.t2.*) is t2's to read,
    # and t1 may answer it once (allow_responses) without a grant on _INBOX.>.
    reply = await _answered_pull(t2, t1, "s1/t1", "s1/t2")
    assert reply.subject.startswith("_INBOX.s1.t2.")


@pytest.mark.parametrize("who", ["no credentials", "unregistered nkey", "another store's till"])
async def test_strangers_cannot_connect(servers: ServerPool, site: Site, who: str) -> None:
    (cfg,) = store_configs(site, "s1", ["t1"])
    srv = await servers.start(cfg)
    seed = {
        "no credentials": None,
        "unregistered nkey": site.seed_file("stranger", Nkey.generate()),
        "another store's till": site.seed_file("s2/x"),  # a real site key, not a user here
    }[who]
    auth = {} if seed is None else {"nkeys_seed": str(seed)}
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(
                srv.client_url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet, **auth
            )
    finally:
        await nc.close()  # a refused connect leaves its socket open otherwise


def _handshake_errors(srv: EmbeddedNatsServer, kind: str) -> int:
    return srv.log_path.read_text(errors="replace").count(f"TLS {kind} handshake error")


async def _refused_repeatedly(
    good: list[EmbeddedNatsServer], rogue: str, kind: str, attempts: int = 2
) -> None:
    """Wait until every good server logged ``attempts`` refused TLS handshakes, while
    checking at each poll that ``rogue`` never became a peer."""

    async def refused() -> bool:
        for srv in good:
            peers = await routed_peers(srv) if kind == "route" else await _leaf_names(srv)
            assert rogue not in peers, f"{rogue} got in to {srv.name}"
        return all(_handshake_errors(s, kind) >= attempts for s in good)

    await wait_until(refused, f"{attempts} refused {kind} handshakes on each good server")


async def _leaf_names(srv: EmbeddedNatsServer) -> set[str]:
    leafz = await srv.monitor("/leafz")
    return {leaf.get("name", "") for leaf in leafz.get("leafs") or []}


async def test_routes_need_a_certificate_from_the_site_ca(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    cfgs = store_configs(site, "s1", ["t1", "t2", "t3"])
    a, b = [await servers.start(c) for c in cfgs[:2]]
    await wait_full_mesh([a, b])
    t1 = await connect_seed(a, site.seed_file("s1/t1"), "s1/t1")
    t2 = await connect_seed(b, site.seed_file("s1/t2"), "s1/t2")
    clients += [t1, t2]
    sink = Collector()
    await t2.subscribe("tm.ev.s1.t1", cb=sink.on_msg)
    await probe_until_seen(t1, events_subject("s1/t1"), sink)  # across the TLS route

    # t3 trusts the site CA but its certificate comes from an impostor CA with the
    # same name, so the client certificate is offered and the *signature* fails.
    impostor = SiteCA.generate("test")
    rogue_tls = site.machine("s1-t3-rogue", ca=impostor)
    assert cfgs[2].cluster is not None and cfgs[2].cluster.tls is not None
    rogue_cluster = replace(cfgs[2].cluster, tls=replace(cfgs[2].cluster.tls, files=rogue_tls))
    await servers.start(replace(cfgs[2], cluster=rogue_cluster))
    await _refused_repeatedly([a, b], "s1-t3", "route")
    assert "unknown authority" in a.log_path.read_text()


async def test_a_route_certificate_must_name_the_address_dialled(
    servers: ServerPool, site: Site
) -> None:
    cfgs = store_configs(site, "s1", ["t1", "t2"])
    # Site-signed, but naming a DNS name only while the peers dial 127.0.0.1.
    started = []
    for cfg in cfgs:
        issued = site.ca.issue_server(cfg.name, dns=["till.example"])
        files = write_tls_files(site.root / "wrong" / cfg.name, site.ca.cert, issued)
        assert cfg.cluster is not None and cfg.cluster.tls is not None
        tls = replace(cfg.cluster.tls, files=files)
        started.append(await servers.start(replace(cfg, cluster=replace(cfg.cluster, tls=tls))))

    async def refused() -> bool:
        for srv in started:
            assert await routed_peers(srv) == set(), f"{srv.name} routed to a misnamed peer"
        return all("doesn't contain any IP SANs" in s.log_path.read_text() for s in started)

    await wait_until(refused, "each dialler refused the certificate for its name")


async def _plaintext_session(port: int) -> bytes:
    """Speak the NATS protocol without TLS; return all the server sent until it hung up.

    CONNECT and PING go out at once: a route listener says nothing before the TLS
    handshake (measured: it waits for a ClientHello, then times out after 2 s), a
    leaf listener first sends INFO in the clear."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b'CONNECT {"verbose":true,"pedantic":false,"name":"plain"}\r\nPING\r\n')
        await writer.drain()
        async with asyncio.timeout(5):
            return await reader.read()  # until EOF: the server hangs up
    finally:
        writer.close()
        await writer.wait_closed()


def _info(sent: bytes) -> dict[str, object]:
    line = sent.split(b"\r\n", 1)[0]
    assert line.startswith(b"INFO "), sent[:100]
    info = json.loads(line[5:])
    assert isinstance(info, dict)
    return info


async def test_plaintext_peers_are_refused(servers: ServerPool, site: Site) -> None:
    hub = await servers.start(hq_config(site))
    (cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.leaf_port}"])
    till = await servers.start(cfg)
    await wait_leafs(hub, 1)
    assert till.cluster_port is not None and hub.leaf_port is not None

    to_route, to_leaf = [await _plaintext_session(p) for p in (till.cluster_port, hub.leaf_port)]
    for sent in (to_route, to_leaf):
        assert b"PONG" not in sent and b"+OK" not in sent
    assert to_route == b""
    assert _info(to_leaf)["tls_required"] is True and _info(to_leaf)["tls_verify"] is True

    async def logged() -> bool:
        failed = [("Router", till), ("Leafnode", hub)]
        return all(
            f"{kind} connection closed: TLS Handshake Failure" in srv.log_path.read_text()
            for kind, srv in failed
        )

    await wait_until(logged, "both servers logged the failed TLS handshakes")

    # A server without TLS dialling the route never joins.
    routes = (f"127.0.0.1:{till.cluster_port}",)
    plain = ServerConfig(
        name="s1-t9",
        port=free_port(),
        cluster=ClusterSpec(name="store-s1", port=free_port(), routes=routes),
    )
    before = _handshake_errors(till, "route")
    await servers.start(plain)
    await _refused_repeatedly([till], "s1-t9", "route", attempts=before + 2)


async def test_leaf_link_runs_over_tls_as_the_store(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    hub = await servers.start(hq_config(site))
    (cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.leaf_port}"])
    # A compromised till server: a local identity with no permissions at all. Only
    # HQ's leaf permissions for s1 stand between it and the other stores.
    rogue = Nkey.generate()
    till = await servers.start(replace(cfg, users=(*cfg.users, NkeyUserSpec(rogue.public_key))))
    await wait_leafs(hub, 1)
    leaf = (await _connz(hub))["s1-t1"]
    assert leaf["kind"] == "Leafnode"
    assert leaf["authorized_user"] == site.keys["s1/t1"].public_key  # the till's own identity
    assert leaf["tls_version"] in ("1.2", "1.3")
    certs = leaf["tls_peer_certs"]  # mutual: HQ saw the till's machine certificate
    assert isinstance(certs, list) and certs[0]["subject"] == "CN=s1-t1"

    hq = await connect_seed(hub, site.seed_file("hq"), "hq")
    t1 = await connect_seed(till, site.seed_file("s1/t1"), "s1/t1")
    bad = await connect_seed(till, site.seed_file("rogue", rogue), "s1/t1")
    clients += [hq, t1, bad]
    at_hq, at_till = Collector(), Collector()
    for subject in (ALL_EVENTS, ALL_VV):
        await hq.subscribe(subject, cb=at_hq.on_msg)
    await t1.subscribe(events_subject("hq"), cb=at_till.on_msg)
    await probe_until_seen(t1, events_subject("s1/t1"), at_hq)  # up
    await probe_until_seen(hq, events_subject("hq"), at_till)  # down

    # HQ pulls from the till: the reply crosses the leaf on the _INBOX.hq.> grant.
    await _answered_pull(hq, t1, "s1/t1", "hq")

    await bad.publish(events_subject("s2/x"), b"injected")
    await bad.publish(vv_subject("s2/x"), b"injected")
    await bad.publish(events_subject("hq"), b"injected")
    await bad.publish(events_subject("s1/t1"), b"allowed")
    await at_hq.wait_for(events_subject("s1/t1"), b"allowed")
    assert [m for m in at_hq.msgs if m[1] == b"injected"] == []


async def test_a_tills_identity_cannot_log_in_to_hq_as_a_client(
    servers: ServerPool, site: Site
) -> None:
    hub = await servers.start(hq_config(site))
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await nc.connect(
                hub.client_url,
                nkeys_seed=str(site.seed_file("s1/t1")),
                allow_reconnect=False,
                connect_timeout=2,
                error_cb=_quiet,
            )
    finally:
        await nc.close()
    # The same hub lets HQ's own identity in: the refusal is about the till's key.
    ok = await connect_seed(hub, site.seed_file("hq"), "hq")
    await ok.close()


async def test_the_leaf_seed_alone_does_not_get_a_foreign_machine_in(
    servers: ServerPool, site: Site
) -> None:
    hub = await servers.start(hq_config(site))
    (cfg,) = store_configs(site, "s1", ["t1"], [f"127.0.0.1:{hub.leaf_port}"])
    (remote,) = cfg.leaf_remotes
    assert remote.tls is not None
    # The right leaf seed, trusting the site CA, but a certificate from an impostor CA.
    foreign = site.machine("s1-t1-foreign", ca=SiteCA.generate("test"))
    stolen = replace(remote, tls=replace(remote.tls, files=foreign))
    await servers.start(replace(cfg, leaf_remotes=(stolen,)))
    await _refused_repeatedly([hub], "s1-t1", "leafnode")
    assert "unknown authority" in hub.log_path.read_text()
