"""Checkpoints a running replica takes of its own log, so `tillmesh log replay` to any
moment of a long history starts near it without an operator's `log checkpoint`.

Every `look_every_s` the keeper compares the events the log holds with the newest
checkpoint's; once `every` more have come, it runs `tillmesh log checkpoint --every N
--keep K` on the log as a child process at low CPU priority: off the selling path (the
fold of 100,000 events is seconds of CPU, which in this process would hold the GIL
from the API and sync), reading the log beside the running writer as any read-only
command does. `--keep` then thins the checkpoints to K spread over the history
(`checkpoints.prune_checkpoints`), so disk stays at about K copies of the state.

One child at a time; when the replica stops, a child still folding is stopped by its
PID (SIGTERM, then SIGKILL) and its unfinished file is cleared by the next run. A
failed run is logged and retried at the next look: the checkpoints are a speed-up,
never state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from replicas.ops.checkpoints import DEFAULT_EVERY, DEFAULT_KEEP, list_checkpoints

__all__ = ["KEEP_CHECKPOINTS", "CheckpointKeeper", "KeepCheckpoints"]

log = logging.getLogger(__name__)
NICENESS = 10  # the child's CPU priority below the replica's
STOP_WAIT_S = 5.0  # for a stopped child to exit before SIGKILL


@dataclass(frozen=True)
class KeepCheckpoints:
    every: int = DEFAULT_EVERY  # events between two checkpoints
    keep: int = DEFAULT_KEEP  # at most this many kept, spread over the history
    look_every_s: float = 60.0  # how often the keeper compares the log with them


KEEP_CHECKPOINTS = KeepCheckpoints()  # a running replica's, unless told otherwise


class CheckpointKeeper:
    """Takes a checkpoint of `log_path` whenever `events()` has grown `every` past the
    newest one. `run` loops until cancelled."""

    def __init__(self, log_path: Path, events: Callable[[], int], config: KeepCheckpoints) -> None:
        self.log_path, self.events, self.config = log_path, events, config
        self.taken = 0  # runs that succeeded (for tests and status)

    def due(self) -> bool:
        checkpoints = list_checkpoints(self.log_path)
        newest = checkpoints[-1].events if checkpoints else 0
        return self.events() - newest >= self.config.every

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.look_every_s)
            if await asyncio.to_thread(self.due):
                await self.take()

    async def take(self) -> bool:
        """One `log checkpoint` child, waited for; whether it succeeded."""
        argv = [sys.executable, "-m", "replicas.cli.main", "log", "checkpoint",
                str(self.log_path), "--every", str(self.config.every),
                "--keep", str(self.config.keep)]  # fmt: skip
        child = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        with contextlib.suppress(OSError):  # it may have exited already
            os.setpriority(os.PRIO_PROCESS, child.pid, NICENESS)
        try:
            _, err = await child.communicate()
        except asyncio.CancelledError:
            await _stop(child)
            raise
        if child.returncode != 0:
            log.warning("checkpoint of %s failed: %s", self.log_path, err.decode()[-500:])
            return False
        self.taken += 1
        return True


async def _stop(child: asyncio.subprocess.Process) -> None:
    if child.returncode is not None:
        return
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), STOP_WAIT_S)
    except TimeoutError:
        child.kill()
        await child.wait()
