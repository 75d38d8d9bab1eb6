"""The demo summary's figures read from each replica's own `GET /metrics`, parsed by
prometheus_client's text parser: what a Prometheus scraping the site would see."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from replicas.demo.access import ApiAccess

__all__ = ["ReplicaMetricsSummary", "scrape_all", "summarise"]


@dataclass(frozen=True)
class ReplicaMetricsSummary:
    appended: int  # local events (sales, ...) appended
    ingested: int  # remote events stored, from every peer
    commits: int
    commit_p99_ms: float | None  # upper bound of the bucket holding the 99th percentile
    pulls_failed: int
    quarantined: int


def summarise(text: str) -> ReplicaMetricsSummary:
    values: dict[str, float] = {}
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "tillmesh_commit_seconds_bucket":
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name == "tillmesh_sync_pulls_total" and s.labels.get("outcome") != "failed":
                continue
            else:
                values[s.name] = values.get(s.name, 0.0) + s.value
    commits = int(values.get("tillmesh_commit_seconds_count", 0))
    return ReplicaMetricsSummary(
        appended=int(values.get("tillmesh_events_appended_total", 0)),
        ingested=int(values.get("tillmesh_events_ingested_total", 0)),
        commits=commits,
        commit_p99_ms=_p99_ms(sorted(buckets), commits),
        pulls_failed=int(values.get("tillmesh_sync_pulls_total", 0)),
        quarantined=int(values.get("tillmesh_log_quarantined_events", 0)),
    )


def _p99_ms(buckets: list[tuple[float, float]], count: int) -> float | None:
    for le, cumulative in buckets:
        if count and cumulative >= 0.99 * count:
            return le * 1000
    return None


async def scrape_all(api: ApiAccess, rids: Iterable[str]) -> dict[str, ReplicaMetricsSummary]:
    """Each replica that answers; one that does not is left out of the table."""

    async def one(rid: str) -> tuple[str, ReplicaMetricsSummary | None]:
        try:
            r = await api.client(rid).get(api.url(rid, "/metrics"), timeout=5.0)
            return rid, summarise(r.text) if r.is_success else None
        except (httpx.HTTPError, ValueError):
            return rid, None

    found = await asyncio.gather(*(one(rid) for rid in rids))
    return {rid: s for rid, s in found if s is not None}
