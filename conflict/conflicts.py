"""What detection reports: conflict records, their ids, and resolutions of running kinds.

Conflict id: the first 12 hex digits of blake2b(kind, [store,] subject, the involved
event ids sorted by (origin, seq)). The subject is in it because one sale can oversell
several SKUs; the store is in it for the stock kinds, whose subject (a SKU) is only
unique within a store: stock is kept per store, so two stores' oversells of one SKU are
two conflicts. An id therefore names exactly one set of events; if more events join a
conflict (a third void, another sale into a negative run) it gets a new id, and a
resolution of the old id no longer applies - except for the running kinds, see
`split_resolved`.
"""

from __future__ import annotations

import bisect
import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator

import msgspec

from conflict.policies import Policies
from core.events import parse_event_id

__all__ = [
    "PREFIX_CHECK_LIMIT",
    "Conflict",
    "Details",
    "Detector",
    "Found",
    "Resolution",
    "conflict_id",
    "id_of_sorted",
    "sorted_events",
    "split_resolved",
]

PREFIX_CHECK_LIMIT = 2000  # longest run whose every prefix is checked for a resolution

Details = dict[str, int | str]


class Resolution(msgspec.Struct, frozen=True):
    """Who resolved a conflict, how, when (HLC) and why; `event` is the resolving event."""

    event: str
    action: str
    by: str
    reason: str
    hlc: int
    price: int | None = None
    effect: str = ""  # what it does if effective, e.g. "A+13@s2", "count A=5@s1", "price B=320"


class Conflict(msgspec.Struct, frozen=True):
    """One conflict; `store` is set for the stock kinds (their subject is a SKU of it).
    `resolution` is the effective one; `superseded` the later ones, which did nothing."""

    id: str
    kind: str
    subject: str
    events: list[str]
    details: Details
    resolution: Resolution | None = None
    store: str | None = None
    superseded: list[Resolution] = []

    @property
    def is_open(self) -> bool:
        return self.resolution is None


class Found(msgspec.Struct, frozen=True):
    """A conflict before its id and resolution are attached."""

    kind: str
    subject: str
    events: list[str]
    details: Details
    auto: Resolution | None = None  # a resolution implied by events (flag_recount)
    store: str | None = None
    ordered: bool = False  # events already distinct, in `sorted_events` order


# A detector: (state, policies, resolutions by conflict id) -> what it found.
Detector = Callable[[sqlite3.Connection, Policies, dict[str, Resolution]], list[Found]]


def _eid_key(eid: str) -> tuple[str, int]:
    return parse_event_id(eid)


def _id_head(kind: str, subject: str, store: str | None) -> list[str]:
    return [kind, subject] if store is None else [kind, store, subject]


def _digest(lines: list[str]) -> str:
    return hashlib.blake2b("\n".join(lines).encode(), digest_size=6).hexdigest()


def conflict_id(kind: str, subject: str, events: Iterable[str], store: str | None = None) -> str:
    """Stable short id: blake2b of kind, store (stock kinds only), subject and the event
    ids in (origin, seq) order."""
    return id_of_sorted(kind, subject, sorted_events(events), store)


def id_of_sorted(kind: str, subject: str, ordered: list[str], store: str | None = None) -> str:
    """`conflict_id` of events already in `sorted_events` order (no second sort)."""
    return _digest(_id_head(kind, subject, store) + ordered)


def sorted_events(events: Iterable[str]) -> list[str]:
    """Distinct event ids in (origin, seq) order. A run of one origin's events is
    mostly in order already; the sort key is parsed once per distinct id."""
    return sorted(set(events), key=_eid_key)


def split_resolved(
    kind: str,
    subject: str,
    ordered: list[str],
    resolved: dict[str, Resolution],
    store: str | None = None,
) -> Iterator[tuple[list[str], Resolution | None]]:
    """Cut a running conflict's events (in time order) after each prefix a resolution
    names: (resolved chunk, its resolution)..., then the open rest (if any).

    The chunk is kept sorted as it grows (one insort per event), so checking every
    prefix costs one join and hash each, not one sort each.
    """
    start = 0
    if resolved and len(ordered) <= PREFIX_CHECK_LIMIT:
        head = _id_head(kind, subject, store)
        chunk: list[tuple[tuple[str, int], str]] = []  # ((origin, seq), eid), sorted
        for end, eid in enumerate(ordered, 1):
            item = (_eid_key(eid), eid)
            i = bisect.bisect_left(chunk, item)
            if i == len(chunk) or chunk[i] != item:
                chunk.insert(i, item)
            res = resolved.get(_digest(head + [e for _, e in chunk]))
            if res is not None:
                yield ordered[start:end], res
                start, chunk = end, []
    if start < len(ordered):
        yield ordered[start:], None
