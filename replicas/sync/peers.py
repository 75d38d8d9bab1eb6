"""`PeerTable`: what one sync engine knows of its peers, and the incidents it recorded.

Per peer: the version vector it announced (raised, never lowered, except where a
short reply showed it holds less), when it was last heard, and until when its claims
are ignored. Incidents are counted per (peer, kind); a hostile one also backs the
peer off, exponentially longer with each strike since its last clean pull.

Owned by `SyncEngine` (`replicas.sync.engine`), which plans pulls from `peers`
directly; like the engine it does no I/O and reads no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from replicas.sync.config import SyncConfig
from replicas.sync.protocol import Incident, PeerStatus

__all__ = ["Peer", "PeerTable"]


@dataclass
class Peer:
    """What we know of one peer."""

    vv: dict[str, int] = field(default_factory=dict)  # its claims; lowered by a short reply
    announced: dict[str, int] = field(default_factory=dict)  # the most it ever announced
    heard_at: float = -math.inf
    avoid_until: float = -math.inf  # its claims are ignored until then
    strikes: int = 0  # hostile incidents since its last clean pull: backoff exponent


class PeerTable:
    """The peers heard from (or that pulled from us), their backoff, and the incidents."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.by_name: dict[str, Peer] = {}
        self._incidents: dict[tuple[str, str], Incident] = {}

    def get(self, name: str) -> Peer:
        """The peer's record, made (empty, never heard) if it is new."""
        return self.by_name.setdefault(name, Peer())

    def avoid(self, peer: str, until: float) -> None:
        p = self.get(peer)
        p.avoid_until = max(p.avoid_until, until)

    # --- incidents ----------------------------------------------------------------------

    def soft(self, peer: str, kind: str, detail: str, now: float) -> None:
        """Record only: counted and shown, no backoff."""
        self._record(peer, kind, detail, now)

    def hostile(self, peer: str, kind: str, detail: str, now: float) -> None:
        """Record, and ignore the peer's claims for an exponentially growing while."""
        self._record(peer, kind, detail, now)
        p = self.get(peer)
        cfg = self.config
        backoff = min(cfg.incident_backoff * 2.0**p.strikes, cfg.incident_backoff_max)
        p.strikes += 1
        self.avoid(peer, now + backoff)

    def _record(self, peer: str, kind: str, detail: str, now: float) -> None:
        old = self._incidents.get((peer, kind))
        count = 1 if old is None else old.count + 1
        self._incidents[(peer, kind)] = Incident(peer, kind, count, detail[:200], now)

    def incidents(self) -> list[Incident]:
        return sorted(self._incidents.values(), key=lambda i: (i.peer, i.kind))

    # --- status -------------------------------------------------------------------------

    def receipts(self, own: str) -> dict[str, int]:
        """Per peer, how many of `own`'s events it has told us it holds durably."""
        return {name: p.vv.get(own, 0) for name, p in self.by_name.items()}

    def statuses(self, now: float) -> dict[str, PeerStatus]:
        return {
            name: PeerStatus(
                dict(p.vv), now - p.heard_at, max(0.0, p.avoid_until - now), dict(p.announced)
            )
            for name, p in self.by_name.items()
        }

    def claimed(self, origin: str) -> int:
        """The most of `origin`'s events any peer has told us it holds."""
        return max((p.vv.get(origin, 0) for p in self.by_name.values()), default=0)

    def lag(self, vv: Mapping[str, int], now: float) -> dict[str, int]:
        """Per origin, the most events a peer not backed off holds beyond `vv`."""
        lag: dict[str, int] = {}
        for p in self.by_name.values():
            if p.avoid_until > now:
                continue
            for origin, seq in p.vv.items():
                behind = seq - vv.get(origin, 0)
                if behind > lag.get(origin, 0):
                    lag[origin] = behind
        return lag
