"""A server is ready only if it is ours, and it does not outlive the process that ran it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from broker.config import ServerConfig, free_port
from broker.errors import ServerStartError
from tests.broker.kit import ServerPool, wait_until

ROOT = Path(__file__).resolve().parents[2]

# A parent that starts one server, writes its pid where the test can read it, and waits.
PARENT = """
import asyncio, os, sys
from pathlib import Path
from broker.config import ServerConfig, free_port
from broker.server import EmbeddedNatsServer

async def main() -> None:
    work = Path(sys.argv[1])
    srv = EmbeddedNatsServer(ServerConfig(name="child", port=free_port()), work)
    await srv.start()
    (work / "pid.tmp").write_text(str(srv.pid))
    os.replace(work / "pid.tmp", work / "pid")  # whole or absent, never half written
    await asyncio.Event().wait()

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _kill_and_wait(pids: list[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
            os.kill(pid, signal.SIGKILL)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    psutil.wait_procs(procs, timeout=5)


@pytest.fixture
def reaped() -> Iterator[list[int]]:
    """PIDs a test started outside a ServerPool; SIGKILLed at teardown, then checked gone."""
    pids: list[int] = []
    yield pids
    _kill_and_wait(pids)
    assert all(_gone(pid) for pid in pids), f"processes left running: {pids}"


async def test_a_monitoring_port_answered_by_another_server_is_not_ready(
    servers: ServerPool,
) -> None:
    first = await servers.start(ServerConfig(name="first", port=free_port()))
    # Its own client port is free, so it starts, answers nothing, and dies on the monitor
    # port; the first server answers /healthz there all along.
    second = ServerConfig(name="second", port=free_port(), http_port=first.http_port)
    with pytest.raises(ServerStartError, match="address already in use") as info:
        await servers.start(second)
    assert info.value.name == "second"
    assert not servers.servers[-1].running
    assert first.running


async def test_the_server_dies_with_the_process_that_started_it(
    tmp_path: Path, reaped: list[int]
) -> None:
    with open(tmp_path / "parent.err", "wb") as err:
        parent = subprocess.Popen(
            [sys.executable, "-c", PARENT, str(tmp_path)],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    reaped.append(parent.pid)
    pid_file = tmp_path / "pid"

    async def started() -> bool:
        assert parent.poll() is None, (tmp_path / "parent.err").read_text()
        return pid_file.exists()

    await wait_until(started, "the parent to start its nats-server", 30)
    server = int(pid_file.read_text())
    reaped.append(server)
    assert psutil.Process(server).ppid() == parent.pid

    os.kill(parent.pid, signal.SIGKILL)  # no cleanup code runs: only the kernel can help
    parent.wait(timeout=10)

    async def server_gone() -> bool:
        return _gone(server)

    await wait_until(server_gone, "the orphaned nats-server to exit", 10)
