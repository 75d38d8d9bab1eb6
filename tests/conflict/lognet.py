"""Replicas on real SQLite files merged at log level, for conflict scenario tests.

Each replica is an `EventLog` on a tmp file with a test-controlled wall clock (`now`,
shared, plus a per-replica `skew`); `pull(dst, src)` is the log-level merge (what
`src` serves with `read_range`, `dst` takes with `ingest_raw`), limited to what the
topology replicates to `dst` (`holds`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from conflict.state import StoreState
from core.clock import HybridClock
from core.events import Body
from core.log import EventLog

__all__ = ["LogNet"]


def _everything(replica: str, origin: str) -> bool:
    return True


class LogNet:
    def __init__(
        self, names: tuple[str, ...], holds: Callable[[str, str], bool] = _everything
    ) -> None:
        self.names, self.holds = names, holds
        self.logs: dict[str, EventLog] = {}
        self.now = 1_000_000  # shared wall ms; `skew` adds per replica
        self.skew: dict[str, int] = {}

    async def open(self, root: Path, **fold_args: Any) -> None:
        for name in self.names:

            def wall(name: str = name) -> int:
                return self.now + self.skew.get(name, 0)

            self.logs[name] = await EventLog.open(
                root / f"{name.replace('/', '_')}.db", name, StoreState(**fold_args),
                clock=HybridClock(wall), wall_ms=wall,
                in_scope=lambda origin, name=name: self.holds(name, origin),  # type: ignore[misc]
            )  # fmt: skip

    async def close(self) -> None:
        for log in self.logs.values():
            await log.close()

    async def do(self, name: str, body: Body, at_ms: int | None = None) -> str:
        if at_ms is not None:
            self.now = at_ms
        return (await self.logs[name].append(body)).id

    async def pull(self, dst: str, src: str) -> None:
        """`dst` takes everything `src` has that it lacks and the topology gives it."""
        a, b = self.logs[dst], self.logs[src]
        have = a.version_vector()
        for origin, seq in sorted(b.version_vector().items()):
            if self.holds(dst, origin) and seq > have.get(origin, 0):
                raws = await b.read_range(origin, have.get(origin, 0) + 1, 10_000)
                result = await a.ingest_raw(raws, peer=src)
                assert not result.rejected, result.rejected[:1]

    async def exchange(self, linked: Callable[[str, str], bool] = _everything) -> None:
        """Every pair of `linked` replicas pulls from each other, twice (transitive)."""
        for _ in range(2):
            for dst in self.names:
                for src in self.names:
                    if dst != src and linked(dst, src):
                        await self.pull(dst, src)
