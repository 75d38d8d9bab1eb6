"""Version vectors: for each origin, the highest contiguous seq a replica holds durably.

Because every origin's events are contiguous from 1 on every replica (gaps are held
back, never applied), one integer per origin says exactly which events a replica
has, and the difference of two vectors says exactly which ranges to send.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["SeqRange", "VersionVector", "dominates", "merge", "missing"]

VersionVector = dict[str, int]
SeqRange = tuple[str, int, int]  # (origin, first seq, last seq), inclusive


def missing(
    mine: Mapping[str, int], theirs: Mapping[str, int], origins: Iterable[str] | None = None
) -> list[SeqRange]:
    """Ranges that `theirs` holds and `mine` lacks, optionally limited to `origins`."""
    wanted = theirs.keys() if origins is None else origins
    ranges = []
    for origin in sorted(wanted):
        have, can = mine.get(origin, 0), theirs.get(origin, 0)
        if can > have:
            ranges.append((origin, have + 1, can))
    return ranges


def merge(a: Mapping[str, int], b: Mapping[str, int]) -> VersionVector:
    return {o: max(a.get(o, 0), b.get(o, 0)) for o in a.keys() | b.keys()}


def dominates(a: Mapping[str, int], b: Mapping[str, int]) -> bool:
    """True if `a` holds every event `b` holds."""
    return all(a.get(o, 0) >= seq for o, seq in b.items())
