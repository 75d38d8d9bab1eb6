"""What keeps one replica process honest: the lock on its data folder (one process per
replica) and the supervision of its own nats-server (restarted with backoff, the
reason it is down kept for status). Used by `runtime.Replica` and `hub.HubNode`.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from pathlib import Path

from broker.server import EmbeddedNatsServer
from replicas.errors import ReplicaRunning

__all__ = [
    "LOCK_FILE",
    "DataDirLock",
    "RestartBackoff",
    "ServerDown",
    "ServerSupervisor",
    "read_pid",
]

log = logging.getLogger(__name__)
SUPERVISE_EVERY = 0.5

LOCK_FILE = "replica.lock"  # next to log.db; see DataDirLock
RESTART_FIRST = 1.0  # seconds before the second restart in a row; doubles from there
RESTART_MAX = 30.0
STABLE_AFTER = 10.0  # up this long, a restarted nats-server counts as healthy again
DOWN_LOG_LINES = 3  # of nats-server's own log, shown while it is down


class RestartBackoff:
    """The wait before restarting a nats-server that exited: none the first time, then
    doubling from `first` up to `cap`. Only a server that stayed up `stable` seconds
    resets it: one that passes readiness and dies a second later would otherwise be
    restarted at full speed for ever."""

    def __init__(
        self, first: float = RESTART_FIRST, cap: float = RESTART_MAX, stable: float = STABLE_AFTER
    ) -> None:
        self.first, self.cap, self.stable = first, cap, stable
        self.failures = 0  # exits since the server was last up `stable` seconds
        self._up_since = float("-inf")

    def exited(self) -> float:
        """The server is down: count it, and return how long to wait before restarting."""
        self.failures += 1
        if self.failures == 1:
            return 0.0
        return min(self.first * 2.0 ** min(self.failures - 2, 16), self.cap)  # no overflow

    def started(self, now: float) -> None:
        self._up_since = now

    def running(self, now: float) -> None:
        if now - self._up_since >= self.stable:
            self.failures = 0


class ServerDown:
    """Why our nats-server is down, from its own words, and when it is tried again."""

    def __init__(self, reason: str, server: EmbeddedNatsServer) -> None:
        self.reason = reason
        self.log_tail = server.log_tail(DOWN_LOG_LINES).splitlines()
        self.retry_at = time.monotonic()


class ServerSupervisor:
    """Restarts a node's nats-server when it dies (clients reconnect by themselves),
    backing off while it keeps dying: one that cannot bind its ports must not be
    respawned twice a second for ever. `status()` says whether it is up, or why not."""

    def __init__(self, server: EmbeddedNatsServer, name: str) -> None:
        self.server, self.name = server, name
        self.restarts = RestartBackoff()
        self.down: ServerDown | None = None  # why the server is down, while it is
        self.restarts.started(time.monotonic())

    async def run(self) -> None:
        """Watch until cancelled."""
        while True:
            await asyncio.sleep(SUPERVISE_EVERY)
            if self.server.running:
                self.restarts.running(time.monotonic())
            else:
                await self._restart()

    async def _restart(self) -> None:
        """One restart after its backoff; meanwhile status says why the server is down."""
        server = self.server
        if self.down is None:  # just found dead
            self.down = ServerDown(f"exited with code {server.returncode}", server)
        delay = self.restarts.exited()
        self.down.retry_at = time.monotonic() + delay
        log.warning(
            "%s: nats-server down (%s); restart %d in %.0f s; its log ends:\n  %s",
            self.name, self.down.reason, self.restarts.failures, delay,
            "\n  ".join(self.down.log_tail),
        )  # fmt: skip
        await asyncio.sleep(delay)
        try:
            await server.restart()
        except Exception as e:  # keep selling; the next attempt waits longer
            first = (str(e).splitlines() or [type(e).__name__])[0]  # some errors say nothing
            self.down = ServerDown(first.rstrip(":"), server)
            return
        self.restarts.started(time.monotonic())
        self.down = None
        log.warning("%s: nats-server restarted (pid %d)", self.name, server.pid)

    def status(self) -> dict[str, object]:
        if self.server.running:
            return {"up": True, "pid": self.server.pid}
        down, now = self.down, time.monotonic()
        return {
            "up": False,
            "pid": None,
            "reason": down.reason if down else "exited",
            "log_tail": down.log_tail if down else [],
            "restarts": self.restarts.failures,
            "next_restart_in": None if down is None else round(max(0.0, down.retry_at - now), 1),
        }


class DataDirLock:
    """An exclusive flock on the replica's data folder, held while the replica runs.

    The kernel drops it however the process ends (SIGKILL too), so it never goes stale;
    nats-server does not inherit it (Python's fds are not inheritable), so an orphaned
    server could not hold it either. The holder writes its pid into it for the error.
    """

    def __init__(self, data_dir: Path, replica_id: str) -> None:
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_pid(fd)
            os.close(fd)
            raise ReplicaRunning(path, replica_id, holder) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: don't keep the lock (and the fd) with no owner
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only fd drops the flock
            self._fd = -1


def read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
