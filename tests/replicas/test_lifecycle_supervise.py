"""A till's nats-server: restarted with backoff while it cannot start, reported down with
its own reason meanwhile, and never outliving a till that was killed."""

from __future__ import annotations

import logging
import os
import re
import signal
from typing import Any

import psutil
import pytest

from replicas.process import RestartBackoff
from tests.e2e.harness import Mesh, wait_until
from tests.replicas.lifecycle_kit import TILL, InProcess, squat

RESTART_LOG = re.compile(r"nats-server down \((.*)\); restart (\d+) in (\d+) s")


def test_backoff_doubles_to_its_cap_and_resets_only_after_a_stable_run() -> None:
    b = RestartBackoff(first=1.0, cap=30.0, stable=10.0)
    b.started(0.0)
    assert [b.exited() for _ in range(8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    b.started(100.0)
    b.running(105.0)  # passed readiness, then up only 5 s: still failing
    assert b.exited() == 30.0
    b.started(200.0)
    b.running(210.0)
    assert b.failures == 0 and b.exited() == 0.0
    for _ in range(5000):  # hours of a server that cannot start: no float overflow
        b.exited()
    assert b.exited() == 30.0


def _restarts(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, int]]:
    found = (RESTART_LOG.search(r.getMessage()) for r in caplog.records)
    return [(m[1], int(m[2]), int(m[3])) for m in found if m]


async def test_a_server_that_cannot_restart_is_retried_with_backoff_and_reported_down(
    in_process: InProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="replicas.runtime")
    till = await in_process.start(TILL)
    assert till.server is not None
    # Its monitoring port, bound first by a starting nats-server, is taken before the
    # supervisor can restart it. (Not the client port: the till's NATS client would
    # connect to the squatter and never hear INFO.)
    host, port = in_process.site.host, till.server.http_port
    os.kill(till.server.pid, signal.SIGKILL)
    with squat(host, port):

        async def third_attempt_failed() -> dict[str, Any] | None:
            status: dict[str, Any] = till.sync_status()["nats_server"]
            return status if status.get("restarts", 0) >= 3 and status["reason"] else None

        down = await wait_until(third_attempt_failed, "three failed restarts", 30)
        assert down["up"] is False and down["pid"] is None
        assert "failed to start (exit code 1)" in down["reason"]
        assert any("address already in use" in line for line in down["log_tail"])
        # Each attempt waited longer than the last: no restart storm.
        assert [(n, s) for _, n, s in _restarts(caplog)][:3] == [(1, 0), (2, 1), (3, 2)]
        assert "exited with code -9" in _restarts(caplog)[0][0]

    async def back_up() -> bool:
        return bool(till.sync_status()["nats_server"]["up"])

    await wait_until(back_up, "nats-server up once its port is free", 30)
    assert till.sync_status()["nats_server_pid"] == till.server.pid


async def test_a_killed_till_takes_its_nats_server_with_it_and_restarts_cleanly(
    one_till: Mesh,
) -> None:
    till = one_till[TILL]
    server = await till.nats_server_pid()
    till.kill(signal.SIGKILL)
    assert till.popen is not None
    till.popen.wait(timeout=10)

    async def orphan_gone() -> bool:
        return not psutil.pid_exists(server)

    await wait_until(orphan_gone, "the killed till's nats-server to exit", 10)
    till.spawn(fresh=True)
    await till.wait_serving()
    status = (await till.status(digest=False))["sync"]
    assert status["nats_server"]["up"] is True
    assert status["nats_server_pid"] == status["nats_server"]["pid"] != server
    assert "nats-server down" not in till.tail()
