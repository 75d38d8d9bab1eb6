"""Benchmarks print figures; they assert only that the work was done, never how fast."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.bench.big_log import build_till_log


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>16}  {note}")


@pytest.fixture(scope="session")
def till_log_1m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared 1M-event till log (`big_log`), built once per session. Read it only."""
    return build_till_log(tmp_path_factory.mktemp("till-1m") / "big.db")


__all__ = ["percentile", "statistics", "table", "till_log_1m"]
