"""Figures read from a replica's state, kept until its version vector moves.

State is a fold of the events, so while the log's version vector stands still every
figure read from it stands still too: a dashboard polling every 2 s or a Prometheus
scrape then costs a dict lookup. While events arrive a figure is read again, unless
its last reading was so slow (HQ's whole chain) that pollers would keep the reader
busy: then it is reused for `BUSY_FACTOR` times as long as that reading took, so
polls take at most 1 / (1 + BUSY_FACTOR) of the reader's time.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

from core.log import EventLog

__all__ = ["StateCache"]

T = TypeVar("T")
MAX_KEYS = 32  # distinct questions kept (a dashboard per time zone, the metrics)
BUSY_FACTOR = 4.0


@dataclass(frozen=True)
class _Entry:
    vv: dict[str, int]
    at: float  # when the reading ended
    cost: float  # how long it took
    value: Any


class StateCache:
    def __init__(self, log: EventLog, timer: Callable[[], float] = time.monotonic) -> None:
        self.log, self.timer = log, timer
        self._entries: dict[Hashable, _Entry] = {}

    async def read(self, key: Hashable, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn` on a read snapshot, or its last answer for `key` if still current."""
        vv, start = self.log.version_vector(), self.timer()
        kept = self._entries.get(key)
        if kept is not None and (kept.vv == vv or start - kept.at < kept.cost * BUSY_FACTOR):
            value: T = kept.value
            return value
        value = await self.log.read(fn)
        end = self.timer()
        if len(self._entries) >= MAX_KEYS and key not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest question
        self._entries[key] = _Entry(vv, end, end - start, value)
        return value
