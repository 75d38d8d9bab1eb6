"""`ReplicaMetrics`: the counters the code paths move and the gauges of the last snapshot."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.observe import CommitStats
from replicas.metrics.snapshot import Snapshot

__all__ = ["COMMIT_BUCKETS", "ReplicaMetrics"]

# Group commits: ~1-5 ms on an SSD's fsync, tens of ms on an SD card or under load.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ReplicaMetrics:
    """Pass one per replica: `Replica(..., metrics=ReplicaMetrics(CollectorRegistry()))`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.appended = Counter(
            "tillmesh_events_appended", "Local events appended to the log (sales, ...)",
            registry=r,
        )  # fmt: skip
        self.ingested = Counter(
            "tillmesh_events_ingested", "Remote events stored, by the peer they came from",
            ["peer"], registry=r,
        )  # fmt: skip
        self.duplicates = Counter(
            "tillmesh_events_duplicate", "Remote events received again (no-ops)", registry=r
        )
        self.held = Counter(
            "tillmesh_events_held", "Remote events stored behind a gap (held, not applied)",
            registry=r,
        )  # fmt: skip
        self.rejected = Counter(
            "tillmesh_events_rejected", "Remote events refused or quarantined", registry=r
        )
        self.commit_seconds = Histogram(
            "tillmesh_commit_seconds", "Time of one group commit of the log, fsync included",
            buckets=COMMIT_BUCKETS, registry=r,
        )  # fmt: skip
        self.pulls = Counter(
            "tillmesh_sync_pulls", "Pulls sent, by peer and outcome (answered, failed)",
            ["peer", "outcome"], registry=r,
        )  # fmt: skip
        self.served_events = Counter(
            "tillmesh_sync_served_events", "Events sent in answer to a peer's pulls",
            ["peer"], registry=r,
        )  # fmt: skip
        self.uplink_changes = Counter(
            "tillmesh_uplink_changes", "Changes of the uplink (or hub) the leaf link uses",
            registry=r,
        )  # fmt: skip
        self.gauges = SnapshotCollector()
        r.register(self.gauges)

    # --- hooks the code paths call --------------------------------------------------

    def on_commit(self, stats: CommitStats) -> None:
        """`EventLog.commit_observers` entry."""
        if stats.appended:
            self.appended.inc(stats.appended)
        for peer, n in stats.ingested.items():
            self.ingested.labels(peer or "unknown").inc(n)
        if stats.duplicates:
            self.duplicates.inc(stats.duplicates)
        if stats.held:
            self.held.inc(stats.held)
        if stats.rejected:
            self.rejected.inc(stats.rejected)
        self.commit_seconds.observe(stats.seconds)

    def pull_done(self, peer: str, ok: bool) -> None:
        """`SyncObserver`: a pull of ours answered or failed."""
        self.pulls.labels(peer, "answered" if ok else "failed").inc()

    def served(self, peer: str, events: int) -> None:
        """`SyncObserver`: we answered a peer's pull."""
        self.served_events.labels(peer).inc(events)

    def uplink_changed(self) -> None:
        self.uplink_changes.inc()

    def update(self, snapshot: Snapshot) -> None:
        """The gauges the next exposition shows (the route takes a snapshot first)."""
        self.gauges.snapshot = snapshot


class SnapshotCollector(Collector):
    """Gauges (and the incident counters sync keeps itself) from the last `Snapshot`:
    label sets come and go with peers, so they are made afresh at each collection."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot
        if s is None:
            return
        yield _gauge("tillmesh_replica_info", "This replica (value 1)", {(s.replica_id,): 1},
                     ["replica"])  # fmt: skip
        yield _gauge("tillmesh_log_events", "Events in the log", {(): s.events})
        yield _gauge("tillmesh_log_held_events", "Events held behind a gap", {(): s.pending})
        yield _gauge("tillmesh_log_quarantined_events", "Events kept in quarantine (evidence)",
                     {(): s.quarantined})  # fmt: skip
        yield _gauge("tillmesh_log_file_bytes", "Size of the log's files", {(): s.file_bytes})
        yield _gauge("tillmesh_online", "1 if linked to HQ (a till) / to its NATS (HQ)",
                     {(): int(s.online)})  # fmt: skip
        yield _gauge("tillmesh_nats_server_up", "1 if this replica's nats-server runs",
                     {(): int(s.nats_server_up)})  # fmt: skip
        yield _gauge("tillmesh_unsynced_to_hq_events", "Own events HQ has not confirmed",
                     {(): s.unsynced_to_hq})  # fmt: skip
        yield from self._sync(s)
        yield from self._links(s)
        yield from self._state(s)

    def _sync(self, s: Snapshot) -> Iterator[Metric]:
        yield _gauge("tillmesh_sync_peer_last_seen_seconds", "Seconds since the peer announced",
                     {(p,): v for p, v in s.peer_age.items()}, ["peer"])  # fmt: skip
        yield _gauge("tillmesh_sync_peer_backlog_events",
                     "Own events the peer has not confirmed holding",
                     {(p,): v for p, v in s.peer_backlog.items()}, ["peer"])  # fmt: skip
        yield _gauge("tillmesh_sync_peer_lag_events", "Events the peer holds that we lack",
                     {(p,): v for p, v in s.peer_lag.items()}, ["peer"])  # fmt: skip
        yield _gauge("tillmesh_sync_origin_behind_events",
                     "Per origin, events some peer holds beyond ours",
                     {(o,): v for o, v in s.origin_behind.items()}, ["origin"])  # fmt: skip
        yield _gauge("tillmesh_sync_origin_missing_seconds",
                     "Per origin, seconds since we first lacked an event (0: none missing)",
                     {(o,): v for o, v in s.origin_missing.items()}, ["origin"])  # fmt: skip
        incidents = CounterMetricFamily(
            "tillmesh_sync_incidents", "Incidents sync recorded, by peer and kind",
            labels=["peer", "kind"],
        )  # fmt: skip
        for (peer, kind), n in sorted(s.incidents.items()):
            incidents.add_metric([peer, kind], n)
        yield incidents

    def _links(self, s: Snapshot) -> Iterator[Metric]:
        yield _gauge("tillmesh_uplink_up", "1 on the uplink the leaf link to HQ uses now",
                     {(u,): int(u == s.uplink) for u in s.uplinks}, ["uplink"])  # fmt: skip
        yield _gauge("tillmesh_leaf_connected", "At HQ: 1 if the till's leaf link is up here",
                     {(t,): int(up) for t, up in s.leaves.items()}, ["till"])  # fmt: skip

    def _state(self, s: Snapshot) -> Iterator[Metric]:
        yield _gauge("tillmesh_sales", "Sales in the state", {(): s.sales})
        yield _gauge("tillmesh_sales_net_minor", "Net takings in the state, minor units",
                     {(): s.net})  # fmt: skip
        yield _gauge("tillmesh_deferred_card_exposure_minor",
                     "Card payments authorised deferred, not settled, minor units",
                     {(st,): a for st, (_, a) in s.deferred.items()}, ["store"])  # fmt: skip
        yield _gauge("tillmesh_deferred_card_payments",
                     "How many card payments are authorised deferred, not settled",
                     {(st,): n for st, (n, _) in s.deferred.items()}, ["store"])  # fmt: skip
        yield _gauge("tillmesh_card_reversals_owed",
                     "Card authorisations of sales not stored whose reversal got no answer yet",
                     {(): s.reversals_owed})  # fmt: skip


def _gauge(
    name: str, doc: str, values: dict[tuple[str, ...], float], labels: list[str] | None = None
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels or [])
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family
