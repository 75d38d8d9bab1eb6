"""`GET /metrics`: the replica's metrics in Prometheus's text format.

On the API's own port and behind its tokens (a read_only one suffices; Prometheus
sends it as a bearer token), since the figures name stores and takings: see the
README's "Metrics" for why not an open port of its own.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from replicas.cache import StateCache
from replicas.metrics.registry import ReplicaMetrics
from replicas.metrics.snapshot import MetricsSource, take_snapshot

__all__ = ["metrics_router"]


def metrics_router(source: MetricsSource, metrics: ReplicaMetrics, cache: StateCache) -> APIRouter:
    r = APIRouter(tags=["metrics"])

    @r.get("/metrics", response_class=Response)
    async def scrape() -> Response:
        # Every await first, then update and expose with none between: two scrapes at
        # once each expose a whole snapshot, never a mix.
        snapshot = await take_snapshot(source, cache)
        metrics.update(snapshot)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r
