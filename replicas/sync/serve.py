"""`PullServer`: the serving side of sync, answering the pull requests peers send us.

A request is served only the origins in both the requester's scope and ours, only
what we hold, and at most what its `TokenBucket` still allows (one per requester,
made full on its first pull). The requester is the one its pull subject names, which
permissions let only that replica publish; a request the transport refused (a reply
inbox not the requester's) never gets here, so it spends no one's budget. The server
plans the log reads (`ServePlan`); the transport runs them and hands the rows back to
build the one reply frame.

Owned by `SyncEngine` (`replicas.sync.engine`), which records the incident when a
request asks for origins outside the scopes; no I/O and no clock reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from replicas.sync.budget import TokenBucket
from replicas.sync.config import SyncConfig
from replicas.sync.protocol import PullRequest, ServePlan, build_reply

__all__ = ["PullServer"]


class PullServer:
    """Plans the reads for a peer's pull request and builds the reply from the rows read."""

    def __init__(
        self,
        replica_id: str,
        in_scope: Callable[[str], bool],
        config: SyncConfig,
        requester_scope: Callable[[str], Callable[[str], bool]],
    ) -> None:
        self.replica_id = replica_id
        self.in_scope = in_scope
        self.config = config
        self._requester_scope = requester_scope
        self._budgets: dict[str, TokenBucket] = {}  # by requester: what we still serve it

    def plan(
        self, peer: str, req: PullRequest, held: Mapping[str, int], now: float
    ) -> tuple[ServePlan, list[str]]:
        """Which rows to serve `peer` (in its scope and ours, up to `held`, within budget),
        and the origins it asked for outside those scopes."""
        allowed = self._requester_scope(peer)
        bucket = self._bucket(peer)
        budget = min(req.max_events, self.config.pull_window, bucket.available(now))
        reads: list[tuple[str, int, int]] = []
        more = False
        refused = []
        for origin, first, last in req.ranges:
            if not (allowed(origin) and self.in_scope(origin)):
                refused.append(origin)
                continue
            count = min(last, held.get(origin, 0)) - first + 1
            served = min(count, budget)
            more = more or served < count
            if served > 0:
                reads.append((origin, first, served))
                budget -= served
        bucket.spend(sum(n for _, _, n in reads))
        max_bytes = min(req.max_bytes, self.config.max_frame_bytes)
        return ServePlan(req.id, tuple(reads), max_bytes, more), refused

    def reply(self, plan: ServePlan, raws: Sequence[bytes]) -> bytes:
        """The one reply frame for `plan`, from the rows read (cut to fit; `more` if cut)."""
        payload, _ = build_reply(self.replica_id, plan.pull_id, raws, plan.max_bytes, plan.more)
        return payload

    def _bucket(self, peer: str) -> TokenBucket:
        bucket = self._budgets.get(peer)
        if bucket is None:
            bucket = self._budgets[peer] = TokenBucket(
                self.config.serve_rate, self.config.serve_burst
            )
        return bucket
