"""One replica, one process: a second copy of a running till exits at once, touching
nothing; a till that cannot listen for its API stops instead of running on without it."""

from __future__ import annotations

import socket

from tests.e2e.harness import Mesh
from tests.replicas.lifecycle_kit import TILL, run_second


async def test_a_second_copy_exits_at_once_naming_the_running_one(one_till: Mesh) -> None:
    first = one_till[TILL]
    server = await first.nats_server_pid()

    second = run_second(one_till)

    assert second.returncode == 2, second.stderr
    assert second.stderr.startswith("tillmesh: error:"), second.stderr
    assert f"{TILL} is already running (pid {first.pid})" in second.stderr
    assert "Traceback" not in second.stderr and "serving on" not in second.stdout
    # The first copy goes on as it was: same nats-server, and no second one.
    assert [p.pid for p in first.nats_servers()] == [server]
    assert await first.nats_server_pid() == server
    assert (await one_till.http.get(f"{first.url}/healthz")).status_code == 200


async def test_an_api_port_taken_stops_the_till_with_a_clear_error(no_till: Mesh) -> None:
    site = no_till.site
    with socket.socket() as squatter:
        squatter.bind((site.host, site.ports[TILL].api))
        squatter.listen()
        proc = run_second(no_till)
    assert proc.returncode == 2, proc.stderr
    assert "tillmesh: error: cannot serve the API on" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "serving on" not in proc.stdout
    assert no_till[TILL].nats_servers() == []  # stopped with the till, not left behind
