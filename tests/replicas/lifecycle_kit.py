"""Helpers for the lifecycle tests (no tests here): replicas as real `tillmesh` processes
(the e2e harness's Mesh) or in this process, each stopped by PID at teardown, and a
squatter that takes a port the moment its owner lets go of it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

from replicas.runtime import Replica
from replicas.site import init_site
from replicas.sync.config import SyncConfig
from tests.e2e.harness import Mesh

__all__ = ["TILL", "InProcess", "run_second", "squat"]

TILL = "s1/t1"
ROOT = Path(__file__).resolve().parents[2]


def run_second(
    mesh: Mesh, rid: str = TILL, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `tillmesh till` for `rid` to its end (bounded); its nats-server children share
    `rid`'s data folder, so the mesh's teardown finds any it leaves behind."""
    return subprocess.run(
        mesh[rid].command(fresh=True),
        cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@contextlib.contextmanager
def squat(host: str, port: int, timeout: float = 5.0) -> Iterator[socket.socket]:
    """Listen on `port` as soon as it is free. Synchronous on purpose: called from the
    event loop right after a kill, nothing else in the loop (a supervisor restarting a
    server) can take the port first."""
    sock = socket.socket()
    try:
        # Like nats-server: TIME_WAIT leftovers of the dead owner's connections may stay.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _bind_when_free(sock, host, port, timeout)
        sock.listen()
        yield sock
    finally:
        sock.close()


def _bind_when_free(sock: socket.socket, host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.bind((host, port))
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.002)  # bounded poll: the deadline above ends it


class InProcess:
    """Replicas of one site run in the test's event loop; `stop_all` stops each and
    checks its nats-server is gone."""

    def __init__(self, root: Path, stores: dict[str, list[str]]) -> None:
        self.root = root
        self.site = init_site(root, stores)
        self.replicas: list[Replica] = []
        self.server_pids: list[int] = []

    async def start(self, rid: str, sync_config: SyncConfig | None = None) -> Replica:
        r = Replica(self.site, rid, self.root, fresh=True, sync_config=sync_config)
        await r.start()
        self.replicas.append(r)
        assert r.server is not None
        self.server_pids.append(r.server.pid)
        return r

    async def stop_all(self) -> None:
        for r in reversed(self.replicas):
            if r.server is not None and r.server.running:
                self.server_pids.append(r.server.pid)  # a restarted one has a new pid
            await r.stop()
        left = [pid for pid in self.server_pids if psutil.pid_exists(pid)]
        assert not left, f"nats-server processes left running: {left}"
