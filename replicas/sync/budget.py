"""`TokenBucket`: how many events a replica still serves one requester right now.

A full bucket holds `burst` events and refills at `rate` events per second; a pull
is served at most what the bucket holds, and what is served is taken from it. This
bounds what one catching-up replica can take from a till that is also selling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TokenBucket"]


@dataclass
class TokenBucket:
    rate: float  # events per second
    burst: int  # most events at once (and the start: a new requester gets a full bucket)
    tokens: float = 0.0
    refilled_at: float = -math.inf

    def available(self, now: float) -> int:
        """Refill for the time since the last call, then how many events may be served."""
        if self.refilled_at == -math.inf:
            self.tokens = float(self.burst)
        else:
            self.tokens += (now - self.refilled_at) * self.rate
        self.tokens = min(self.tokens, float(self.burst))
        self.refilled_at = now
        return max(0, int(self.tokens))

    def spend(self, events: int) -> None:
        self.tokens -= events
