"""`take_snapshot`: what the gauges show, read from a replica's existing read interfaces.

Only what the status API reads already: the log's stats, the sync engine's status
(peers, origins, receipts, incidents, the uplink and leaf links), and state figures
from `conflict` queries (through `StateCache`, so a scrape re-reads state only when
events moved). Another store behind those interfaces (PostgreSQL at HQ) plugs in
unchanged.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any, Protocol

from conflict import queries, reports
from core.events import HQ
from core.stats import LogStats
from replicas.api.common import ReplicaHandle
from replicas.cache import StateCache
from replicas.sync.protocol import holds

__all__ = ["MetricsSource", "Snapshot", "snapshot_of", "take_snapshot"]


class MetricsSource(ReplicaHandle, Protocol):
    """A replica as metrics read it: the API's handle, plus the names of its uplinks
    (a till's leaf link routes, from the site: `wan`, `lte`, ...; none at HQ)."""

    @property
    def uplink_names(self) -> list[str]: ...


@dataclass(frozen=True)
class Snapshot:
    replica_id: str
    events: int = 0
    pending: int = 0
    quarantined: int = 0
    file_bytes: int = 0
    online: bool = False
    nats_server_up: bool = False
    unsynced_to_hq: int = 0
    peer_age: dict[str, float] = field(default_factory=dict)
    peer_backlog: dict[str, int] = field(default_factory=dict)
    peer_lag: dict[str, int] = field(default_factory=dict)
    origin_behind: dict[str, int] = field(default_factory=dict)
    origin_missing: dict[str, float] = field(default_factory=dict)
    incidents: dict[tuple[str, str], int] = field(default_factory=dict)
    uplinks: list[str] = field(default_factory=list)
    uplink: str | None = None  # the one in use; None: no link to HQ
    leaves: dict[str, bool] = field(default_factory=dict)  # at HQ: till -> leaf link up
    sales: int = 0
    net: int = 0
    deferred: dict[str, tuple[int, int]] = field(default_factory=dict)  # store: (n, amount)
    reversals_owed: int = 0  # card authorisations of sales not stored, not yet reversed


def _state_figures(conn: sqlite3.Connection) -> tuple[queries.SalesSummary, list[Any]]:
    return queries.sales_summary(conn), reports.deferred_cards(conn)


async def take_snapshot(source: MetricsSource, cache: StateCache) -> Snapshot:
    stats = await source.log.stats()
    summary, deferred_rows = await cache.read("metrics", _state_figures)
    owed = len(await source.reversals.keys()) if source.reversals is not None else 0
    return snapshot_of(source, stats, summary, deferred_rows, owed)


def snapshot_of(
    source: MetricsSource,
    stats: LogStats,
    summary: queries.SalesSummary,
    deferred_rows: list[Any],
    reversals_owed: int = 0,
) -> Snapshot:
    """The snapshot from figures already read (HQ on PostgreSQL reads its own)."""
    sync: dict[str, Any] = source.sync_status()
    uplink = sync.get("uplink") or {}
    return Snapshot(
        replica_id=source.replica_id,
        events=stats.events, pending=stats.pending, quarantined=stats.quarantined,
        file_bytes=stats.file_bytes, online=source.online(),
        nats_server_up=bool((sync.get("nats_server") or {}).get("up")),
        unsynced_to_hq=source.unsynced_to_hq(),
        **_sync_figures(source, sync),
        uplinks=list(source.uplink_names),
        uplink=uplink.get("uplink") if uplink.get("connected") else None,
        leaves=dict(sync.get("leaves") or {}),
        sales=summary.sales, net=summary.net,
        deferred=_per_store(deferred_rows), reversals_owed=reversals_owed,
    )  # fmt: skip


def _sync_figures(source: MetricsSource, sync: dict[str, Any]) -> dict[str, Any]:
    """Per peer: age, our events it has not confirmed, its events we lack (in our scope);
    per origin: how far behind and for how long; incidents."""
    vv = source.log.version_vector()
    own = vv.get(source.replica_id, 0)
    scope = holds(source.replica_id)
    peers: dict[str, Any] = sync.get("peers") or {}
    receipts: dict[str, int] = sync.get("receipts") or {}
    origins: dict[str, Any] = sync.get("origins") or {}
    hq = [HQ] if source.replica_id != HQ else []
    return {
        "peer_age": {p: s["age"] for p, s in peers.items() if s.get("age") is not None},
        # HQ is every till's peer, heard or not: cut off (its link switched off, no
        # receipt yet) is when the backlog to it matters most.
        "peer_backlog": {p: max(own - receipts.get(p, 0), 0) for p in {*peers, *receipts, *hq}},
        "peer_lag": {
            p: sum(max(n - vv.get(o, 0), 0) for o, n in s.get("vv", {}).items() if scope(o))
            for p, s in peers.items()
        },
        "origin_behind": {o: s["behind"] for o, s in origins.items()},
        "origin_missing": {o: s["missing_for"] or 0.0 for o, s in origins.items()},
        "incidents": {(i["peer"], i["kind"]): i["count"] for i in sync.get("incidents") or []},
    }


def _per_store(rows: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for row in rows:
        n, amount = out.get(row["store"], (0, 0))
        out[row["store"]] = (n + row["payments"], amount + row["amount"])
    return out
