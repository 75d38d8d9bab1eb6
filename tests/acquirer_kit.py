"""The card acquirer as a real process (`tillmesh acquirer`), for any test folder.

Started on port 0; its URL is read back from the file it writes. Stopped by its PID
(SIGCONT, SIGTERM, wait, SIGKILL); `records()` is the processor-side count.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from replicas.payments.adapter import HttpAcquirer
from replicas.payments.service import KEY_FILE, URL_FILE

__all__ = ["AcquirerProc"]

START_TIMEOUT = 30.0


class AcquirerProc:
    """One `tillmesh acquirer` subprocess with its data folder."""

    def __init__(self, data: Path, *args: str) -> None:
        self.data, self.args = data, list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.key = ""  # its API key (<data>/acquirer.key)

    async def start(self) -> str:
        (self.data / URL_FILE).unlink(missing_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        out = open(self.data / "acquirer.out", "ab")  # noqa: SIM115 - the child keeps it
        cmd = [sys.executable, "-m", "replicas.cli.main", "acquirer", "--data", str(self.data)]
        self.proc = subprocess.Popen([*cmd, *self.args], stdout=out, stderr=out)
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.data / URL_FILE).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"acquirer did not start: {self.tail()}")
            await asyncio.sleep(0.05)
        self.url = (self.data / URL_FILE).read_text().strip()
        self.key = (self.data / KEY_FILE).read_text().strip()  # written before the URL
        return self.url

    def client(self, timeout_s: float = 3.0) -> HttpAcquirer:
        """The till's adapter to this acquirer, with its API key."""
        return HttpAcquirer(self.url, timeout_s, self.key)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def tail(self) -> str:
        path = self.data / "acquirer.out"
        return path.read_text()[-2000:] if path.exists() else ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    async def records(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{self.url}/v1/records", headers=self.auth)
            r.raise_for_status()
            out: list[dict[str, Any]] = r.json()
            return out

    async def in_flight(self) -> int:
        """Payments the acquirer has received and not answered yet."""
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{self.url}/healthz")
            r.raise_for_status()
            return int(r.json()["in_flight"])

    async def set_mode(self, mode: str) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.put(f"{self.url}/admin/mode", json={"mode": mode}, headers=self.auth)
            r.raise_for_status()
