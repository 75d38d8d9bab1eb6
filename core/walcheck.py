"""WAL checkpoints off the selling path (`WalCheckpointer`).

A checkpoint copies the write-ahead log back into the database file. Run by the writer
(`wal_autocheckpoint`, core.sqlite), it happens inside the commit of whichever sale
crosses the mark: measured on a 200,000-event log, one sale in ~700 took 55 ms instead
of 0.6. A connection of its own runs PASSIVE checkpoints instead, at most once per
`every_s` after commits, on its own thread, so those pages are already copied when the
writer's autocheckpoint comes due, which is left as the backstop that resets the file.

    wal = WalCheckpointer(path)
    await wal.open()
    wal.committed()   # after each commit
    await wal.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import aiosqlite

from core.sqlite import connect

__all__ = ["CHECKPOINT_EVERY_S", "WalCheckpointer"]

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_S = 1.0


class WalCheckpointer:
    """PASSIVE checkpoints of `path`'s WAL on a connection of their own."""

    def __init__(
        self,
        path: Path,
        every_s: float = CHECKPOINT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.every_s, self.clock = path, every_s, clock
        self._conn: aiosqlite.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._dirty = False  # a commit since the running checkpoint began
        self._last = float("-inf")
        self.checkpoints = 0  # done (for tests)

    async def open(self) -> None:
        self._conn = await connect(self.path)  # the log's own settings (busy timeout, ...)

    def committed(self) -> None:
        """A commit happened: a checkpoint soon (at most one running, one a second)."""
        self._dirty = True
        if self._conn is not None and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._run(), name=f"wal-checkpoint {self.path}")

    async def _run(self) -> None:
        assert self._conn is not None
        while self._dirty:
            await asyncio.sleep(max(0.0, self._last + self.every_s - self.clock()))
            self._dirty, self._last = False, self.clock()
            try:
                await self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error as e:  # a speed-up only: the writer's backstop remains
                log.warning("%s: WAL checkpoint failed: %s", self.path, e)
                return
            self.checkpoints += 1

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
