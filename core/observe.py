"""What the log tells observers of each commit (counts and timing), for metrics.

core imports no metrics or network library: a replica passes an observer in
(`EventLog.commit_observers`, e.g. `replicas.metrics`) and turns these into its
Prometheus counters and histogram.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from core.batch import IngestResult

__all__ = ["CommitObserver", "CommitStats", "commit_stats"]


@dataclass(frozen=True)
class CommitStats:
    """One group commit: local events appended, remote events stored per peer, what
    ingest skipped, and the transaction's time on the writer thread, fsync included
    (what a sale waits for beyond queueing)."""

    appended: int
    ingested: dict[str, int]  # peer ('' when none was named) -> events stored
    duplicates: int
    held: int  # stored behind a gap, not applied until it fills
    rejected: int
    seconds: float


# Told of every successful commit, on the log's writer task: keep it quick.
CommitObserver = Callable[[CommitStats], None]


def commit_stats(done: Iterable[tuple[str, int, object]], seconds: float) -> CommitStats:
    """From each request of a commit, (peer, events it appended, its result): an append's
    result is its list of events, an ingest's an `IngestResult`."""
    appended, duplicates, held, rejected = 0, 0, 0, 0
    ingested: dict[str, int] = {}
    for peer, appends, result in done:
        if isinstance(result, IngestResult):
            if result.stored:
                ingested[peer] = ingested.get(peer, 0) + len(result.stored)
            duplicates += result.duplicates
            held += result.held
            rejected += len(result.rejected)
        else:
            appended += appends
    return CommitStats(appended, ingested, duplicates, held, rejected, seconds)
