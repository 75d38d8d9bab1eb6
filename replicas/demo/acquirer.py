"""The demo's card acquirer: `tillmesh acquirer` as a process of its own beside the
fleet, declining the cards whose token says so (`DECLINE_TOKENS`), stopped by its PID.

The workload gives a share of cards such tokens, so the model knows which payments the
acquirer declines (online: the sale is refused; deferred: a decline comes back later
and lands as a conflict), and the checks hold the replicas' payments report to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from replicas.demo.fleet import DemoError, tillmesh_command
from replicas.payments.service import URL_FILE

__all__ = ["DECLINE_TOKENS", "DemoAcquirer"]

DECLINE_TOKENS = "^tok_x"  # the acquirer declines these; the workload knows it
START_TIMEOUT = 30.0


class DemoAcquirer:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.popen: subprocess.Popen[bytes] | None = None

    async def start(self) -> str:
        """Start it on a free port; its URL once it listens."""
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / URL_FILE).unlink(missing_ok=True)
        argv = [*tillmesh_command(), "acquirer", "--data", str(self.data.resolve()),
                "--decline-tokens", DECLINE_TOKENS]  # fmt: skip
        with open(self.data / "process.log", "ab") as log:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.data / URL_FILE).exists():
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"the acquirer did not start (see {self.data / 'process.log'})")
            await asyncio.sleep(0.05)
        return (self.data / URL_FILE).read_text().strip()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
