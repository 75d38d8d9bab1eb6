"""Which stores an HQ ingest worker owns: `--shard K/N`.

A store belongs to worker `n mod N`, where n is the number its name ends in (`s17` ->
17; chains number their stores), or else `blake2b(name) mod N`: stable whatever stores
the site adds or drops, even across numbered stores, and the same on every machine,
so each origin's chain has one writer. HQ's
own origin (catalog, prices, revocations) belongs to worker 0, which also runs HQ's
hub nats-server and API. Pulls a till sends HQ are answered by the worker owning the
till's store (it reads HQ's origin from the shared database too).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from core.events import HQ, store_of

__all__ = ["Shard"]

_SHARD = re.compile(r"^(\d+)/(\d+)$")
_NUMBERED = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'K/N', 0 <= K < N."""
        m = _SHARD.match(text)
        if m is None or not 0 <= int(m[1]) < int(m[2]):
            raise ValueError(f"a shard is K/N with 0 <= K < N, like 0/2: {text!r}")
        return cls(int(m[1]), int(m[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def front(self) -> bool:
        """Worker 0: HQ's origin, HQ's hub nats-server and its API."""
        return self.index == 0

    def owns_store(self, store: str) -> bool:
        numbered = _NUMBERED.search(store)
        if numbered is not None:
            return int(numbered[1]) % self.count == self.index
        digest = hashlib.blake2b(store.encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def owns(self, origin: str) -> bool:
        """Whether this worker writes `origin`'s chain."""
        store = store_of(origin)
        return self.front if store is None or origin == HQ else self.owns_store(store)

    def answers(self, requester: str) -> bool:
        """Whether this worker answers `requester`'s pulls (its store's worker; worker 0
        for a requester of no store)."""
        store = store_of(requester)
        return self.front if store is None else self.owns_store(store)
