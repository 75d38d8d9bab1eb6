"""Hybrid logical clock (Kulkarni et al.), packed in one int: wall milliseconds << 16 | counter.

HLC timestamps order events consistently with causality and stay close to wall
time. Two guards make them safe on tills with bad clocks:

- monotonic across restarts: the log persists the last timestamp and the clock
  is created from it (`HybridClock(wall, last=...)`);
- bounded: a remote timestamp more than `max_offset_ms` ahead of our wall clock
  does not drag our clock forward (`observe` returns False). The event itself is
  still kept; the log flags it so conflict detection can report it.

The wall clock is passed in, so tests control time and merges never read it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["COUNTER_BITS", "HybridClock", "hlc_ms", "pack", "system_wall_ms", "unpack"]

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1


def pack(ms: int, counter: int) -> int:
    return (ms << COUNTER_BITS) | counter


def unpack(hlc: int) -> tuple[int, int]:
    return hlc >> COUNTER_BITS, hlc & _COUNTER_MASK


def hlc_ms(hlc: int) -> int:
    return hlc >> COUNTER_BITS


def system_wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridClock:
    def __init__(
        self,
        wall_ms: Callable[[], int] = system_wall_ms,
        *,
        max_offset_ms: int = 60_000,
        last: int = 0,
    ) -> None:
        self._wall_ms = wall_ms
        self.max_offset_ms = max_offset_ms
        self.last = last

    def now(self) -> int:
        """A timestamp for a local event: greater than every timestamp seen so far."""
        self.last = self._advance(self.last, self._wall_ms())
        return self.last

    def observe(self, remote: int) -> bool:
        """Merge a remote timestamp; False (and no change) if it is too far ahead."""
        if remote <= self.last:
            return True
        if hlc_ms(remote) - self._wall_ms() > self.max_offset_ms:
            return False
        self.last = remote
        return True

    @staticmethod
    def _advance(last: int, wall: int) -> int:
        last_ms, counter = unpack(last)
        if wall > last_ms:
            return pack(wall, 0)
        if counter == _COUNTER_MASK:  # counter exhausted within one ms: borrow the next ms
            return pack(last_ms + 1, 0)
        return pack(last_ms, counter + 1)
