"""Small pure CRDTs: the executable specification the SQL fold in `state.py` must agree with.

Every type here is a frozen value. Operations return new values; nothing mutates.
Every `merge(a, b)` is a join of a semilattice, so for all values a, b, c:

    merge(a, b) == merge(b, a)                          commutative
    merge(merge(a, b), c) == merge(a, merge(b, c))      associative
    merge(a, a) == a                                    idempotent

and every local operation is an inflation (`merge(x, op(x)) == op(x)`), so replicas
that have seen the same operations, in any order and any number of times, are equal.
The tests in `tests/conflict/test_conflict_crdt.py` check these laws with hypothesis.

No wall clock is read here: time is always an HLC int carried by an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, Protocol, Self, TypeVar

from core.clock import hlc_ms

__all__ = [
    "Count",
    "GCounter",
    "GSet",
    "LWWRegister",
    "Move",
    "ORSet",
    "PNCounter",
    "ResetCounter",
    "Write",
    "merge",
    "merge_all",
]

T = TypeVar("T")
V = TypeVar("V")


def _canon(counts: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """Sorted, zero-free pairs: one representation per value, so `==` is value equality."""
    return tuple(sorted((k, v) for k, v in counts.items() if v))


@dataclass(frozen=True, slots=True)
class GCounter:
    """Grow-only counter: one non-decreasing count per replica; value = their sum.

    Merge takes the per-replica max (a join), so it is commutative, associative and
    idempotent; `increment` only raises one entry, so it is monotone.
    """

    counts: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> GCounter:
        if any(v < 0 for v in counts.values()):
            raise ValueError("GCounter counts are non-negative")
        return cls(_canon(counts))

    def get(self, replica: str) -> int:
        return dict(self.counts).get(replica, 0)

    def increment(self, replica: str, n: int = 1) -> GCounter:
        if n < 0:
            raise ValueError("a GCounter only grows")
        counts = dict(self.counts)
        counts[replica] = counts.get(replica, 0) + n
        return GCounter(_canon(counts))

    @property
    def value(self) -> int:
        return sum(v for _, v in self.counts)

    def merge(self, other: GCounter) -> GCounter:
        a, b = dict(self.counts), dict(other.counts)
        return GCounter(_canon({k: max(a.get(k, 0), b.get(k, 0)) for k in a.keys() | b.keys()}))


@dataclass(frozen=True, slots=True)
class PNCounter:
    """Two GCounters, increments P and decrements N; value = P - N. Laws: those of GCounter,
    component-wise. The value may go down, but the state (P, N) only grows."""

    p: GCounter = GCounter()
    n: GCounter = GCounter()

    def add(self, replica: str, delta: int) -> PNCounter:
        if delta >= 0:
            return PNCounter(self.p.increment(replica, delta), self.n)
        return PNCounter(self.p, self.n.increment(replica, -delta))

    @property
    def value(self) -> int:
        return self.p.value - self.n.value

    def merge(self, other: PNCounter) -> PNCounter:
        return PNCounter(self.p.merge(other.p), self.n.merge(other.n))


class Move(NamedTuple):
    """A stock delta at an HLC moment; `id` names the event (and line) that caused it."""

    hlc: int
    id: str
    delta: int


class Count(NamedTuple):
    """An absolute stock count at an HLC moment. Ordered by (hlc, origin, seq)."""

    hlc: int
    origin: str
    seq: int
    qty: int


@dataclass(frozen=True, slots=True)
class ResetCounter:
    """Stock of one SKU: a grow-only set of moves plus the latest count.

    value = latest.count + sum(delta of moves with hlc > latest.hlc), or the sum of all
    deltas if never counted. A move at or before the count's HLC is already reflected in
    the count (the counter saw the shelf after it), so it changes nothing; it is kept
    because a later-arriving earlier count may make it relevant again.

    Merge = (union of moves, max count by (hlc, origin, seq)): both components are
    joins, so merge is commutative, associative and idempotent. The latest count is a
    total order on (hlc, origin, seq), so concurrent counts resolve the same everywhere.
    """

    moves: frozenset[Move] = frozenset()
    latest: Count | None = None

    def move(self, hlc: int, id: str, delta: int) -> ResetCounter:
        return ResetCounter(self.moves | {Move(hlc, id, delta)}, self.latest)

    def count(self, hlc: int, origin: str, seq: int, count: int) -> ResetCounter:
        return ResetCounter(self.moves, _max_count(self.latest, Count(hlc, origin, seq, count)))

    @property
    def value(self) -> int:
        base, after = (0, -1) if self.latest is None else (self.latest.qty, self.latest.hlc)
        return base + sum(m.delta for m in self.moves if m.hlc > after)

    def merge(self, other: ResetCounter) -> ResetCounter:
        return ResetCounter(self.moves | other.moves, _max_count(self.latest, other.latest))


def _max_count(a: Count | None, b: Count | None) -> Count | None:
    if a is None or b is None:
        return a if b is None else b
    return a if a >= b else b  # whole tuple: total even if (hlc, origin, seq) were reused


class Write(NamedTuple, Generic[V]):
    """One register write. (hlc, origin, seq) is unique per event and totally ordered."""

    hlc: int
    origin: str
    seq: int
    value: V

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.hlc, self.origin, self.seq)


@dataclass(frozen=True)  # no slots: `LWWRegister[int]()` must be able to set __orig_class__
class LWWRegister(Generic[T]):
    """Last-writer-wins register with a multi-value view.

    State: the latest write of each origin (a map origin -> LWW cell). Writes of one
    origin are causally ordered (a till's log is sequential), so an origin's earlier
    writes are dominated and dropped; writes of different origins carry no causal
    order we can see, so each origin keeps its latest one.

    - `winner`: the max write by (hlc, origin, seq) - plain LWW.
    - `concurrent(window_ms)`: the per-origin latest writes whose HLC wall part is within
      `window_ms` of the winner's - the writes a human would call "at the same time".
      The winner is always in it. This is the view price policies choose from.

    Merge = per-origin max by (hlc, seq): a join, so commutative, associative and
    idempotent; `write` is an inflation. Precondition: (origin, seq) names one write
    (the log refuses equivocation before anything is folded), so keys never tie.
    """

    cells: frozenset[Write[T]] = frozenset()

    def write(self, hlc: int, origin: str, seq: int, value: T) -> LWWRegister[T]:
        return self.merge(LWWRegister(frozenset({Write(hlc, origin, seq, value)})))

    def merge(self, other: LWWRegister[T]) -> LWWRegister[T]:
        best: dict[str, Write[T]] = {}
        for w in (*self.cells, *other.cells):
            cur = best.get(w.origin)
            if cur is None or w.key > cur.key:
                best[w.origin] = w
        return LWWRegister(frozenset(best.values()))

    @property
    def winner(self) -> Write[T] | None:
        return max(self.cells, key=lambda w: w.key, default=None)

    @property
    def value(self) -> T | None:
        w = self.winner
        return None if w is None else w.value

    def concurrent(self, window_ms: int) -> frozenset[Write[T]]:
        w = self.winner
        if w is None:
            return frozenset()
        top = hlc_ms(w.hlc)
        return frozenset(c for c in self.cells if top - hlc_ms(c.hlc) <= window_ms)


@dataclass(frozen=True)  # no slots: `GSet[int]()` must be able to set __orig_class__
class GSet(Generic[T]):
    """Grow-only set. Merge = union: commutative, associative, idempotent; add is monotone."""

    items: frozenset[T] = frozenset()

    def add(self, item: T) -> GSet[T]:
        return GSet(self.items | {item})

    def merge(self, other: GSet[T]) -> GSet[T]:
        return GSet(self.items | other.items)


@dataclass(frozen=True)  # no slots: `ORSet[int]()` must be able to set __orig_class__
class ORSet(Generic[T]):
    """Observed-remove set: every add carries a unique tag; a remove tombstones the tags
    it observed, so an add concurrent with a remove survives (add wins).

    State = (G-set of (item, tag), G-set of removed tags); merge = union of both, hence
    commutative, associative and idempotent. value = items with a live tag.
    """

    adds: frozenset[tuple[T, str]] = frozenset()
    removed: frozenset[str] = frozenset()

    def add(self, item: T, tag: str) -> ORSet[T]:
        return ORSet(self.adds | {(item, tag)}, self.removed)

    def remove(self, item: T) -> ORSet[T]:
        return ORSet(self.adds, self.removed | {t for i, t in self.adds if i == item})

    @property
    def value(self) -> frozenset[T]:
        return frozenset(i for i, t in self.adds if t not in self.removed)

    def merge(self, other: ORSet[T]) -> ORSet[T]:
        return ORSet(self.adds | other.adds, self.removed | other.removed)


class _Lattice(Protocol):
    def merge(self, other: Self) -> Self: ...


_Mergeable = TypeVar("_Mergeable", bound=_Lattice)


def merge(a: _Mergeable, b: _Mergeable) -> _Mergeable:
    """`a.merge(b)` as a function, for code that folds many replicas: `reduce(merge, xs)`."""
    return a.merge(b)


def merge_all(values: Iterable[_Mergeable]) -> _Mergeable:
    it = iter(values)
    acc = next(it)
    for v in it:
        acc = acc.merge(v)
    return acc
