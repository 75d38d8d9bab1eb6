"""Processes on the lab's machines, by PID: stopping them (TERM, wait, KILL) and reading
the line a process says when it is ready."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterable

import psutil  # type: ignore[import-untyped]

__all__ = ["STOP_TIMEOUT", "first_line", "gone", "stop_pids"]

STOP_TIMEOUT = 5.0  # a process to exit after SIGTERM, before SIGKILL


def gone(pid: int) -> bool:
    """Exited; a zombie counts (it holds no namespace, and init may be slow to reap it)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until every pid is gone; the ones still alive after `timeout`."""
    alive = list(pids)
    deadline = time.monotonic() + timeout
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [pid for pid in alive if not gone(pid)]
    return alive


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_pids(pids: Iterable[int]) -> list[int]:
    """SIGCONT + SIGTERM, wait, SIGKILL the rest, wait; the PIDs that would not die."""
    alive = [pid for pid in pids if not gone(pid)]
    for pid in alive:
        _signal(pid, signal.SIGCONT)  # a stopped process would sit on its SIGTERM
        _signal(pid, signal.SIGTERM)
    alive = _wait_gone(alive, STOP_TIMEOUT)
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return _wait_gone(alive, STOP_TIMEOUT)


def first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """What `proc` wrote to its stdout pipe by the end of its first line, its exit, or
    `timeout`, whichever comes first."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while b"\n" not in data and (left := deadline - time.monotonic()) > 0:
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                break  # exited
            data += chunk
    return data.decode(errors="replace")
