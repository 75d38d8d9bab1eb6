"""Prometheus metrics of one replica (till or HQ), served at `GET /metrics`.

`ReplicaMetrics` owns a `CollectorRegistry` of its own (never prometheus_client's
global one, so several replicas in one process, as in the tests, keep their figures
apart). Counters move where the work happens: the log tells it of every commit
(`EventLog.commit_observers`, core importing no metrics library), sync of every pull
(`SyncObserver`), the runtime of every change of uplink. Gauges are read at scrape
time from the replica's status, sync state and state (`snapshot`).
"""

from replicas.metrics.registry import ReplicaMetrics
from replicas.metrics.route import metrics_router
from replicas.metrics.snapshot import MetricsSource, Snapshot, take_snapshot

__all__ = ["MetricsSource", "ReplicaMetrics", "Snapshot", "metrics_router", "take_snapshot"]
