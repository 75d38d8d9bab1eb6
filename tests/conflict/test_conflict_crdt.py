"""Semilattice laws of the spec CRDTs: merge is commutative, associative, idempotent,
and local operations are inflations (merging the old value into the new changes nothing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict.crdt import (
    GCounter,
    GSet,
    LWWRegister,
    ORSet,
    PNCounter,
    ResetCounter,
    merge,
    merge_all,
)
from core.clock import pack

_replicas = st.sampled_from(("s1/t1", "s1/t2", "hq"))
_hlcs = st.builds(pack, st.integers(0, 20_000), st.integers(0, 3))

gcounters = st.dictionaries(_replicas, st.integers(0, 50)).map(GCounter.of)
pncounters = st.builds(PNCounter, gcounters, gcounters)
_moves = st.tuples(_hlcs, st.sampled_from(("a#0", "b#0", "b#1", "c#0")), st.integers(-9, 9))
_counts = st.tuples(_hlcs, _replicas, st.integers(1, 3), st.integers(0, 40))


@st.composite
def reset_counters(draw: st.DrawFn) -> ResetCounter:
    rc = ResetCounter()
    for m in draw(st.lists(_moves, max_size=5)):
        rc = rc.move(*m)
    for c in draw(st.lists(_counts, max_size=2)):
        rc = rc.count(*c)
    return rc


def _write(origin: str, seq: int, ms: int) -> tuple[int, str, int, int]:
    # (origin, seq) names one event, so its hlc and value are functions of it (no equivocation)
    return (pack(ms + seq * 700, len(origin)), origin, seq, (seq * 7 + len(origin)) % 5)


_writes = st.builds(_write, _replicas, st.integers(1, 6), st.sampled_from((0, 0, 0, 1)))


@st.composite
def registers(draw: st.DrawFn) -> LWWRegister[int]:
    reg = LWWRegister[int]()
    for w in draw(st.lists(_writes, max_size=5)):
        reg = reg.write(*w)
    return reg


gsets = st.frozensets(st.integers(0, 9)).map(GSet)


@st.composite
def orsets(draw: st.DrawFn) -> ORSet[int]:
    s = ORSet[int]()
    for item, tag, remove in draw(
        st.lists(st.tuples(st.integers(0, 4), st.text("ab", max_size=3), st.booleans()), max_size=6)
    ):
        s = s.remove(item) if remove else s.add(item, tag)
    return s


ALL: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("gcounter", gcounters),
    ("pncounter", pncounters),
    ("reset", reset_counters()),
    ("lww", registers()),
    ("gset", gsets),
    ("orset", orsets()),
]


@pytest.mark.parametrize(("name", "values"), ALL, ids=[n for n, _ in ALL])
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_merge_is_a_join(name: str, values: st.SearchStrategy[Any], data: st.DataObject) -> None:
    a, b, c = data.draw(values), data.draw(values), data.draw(values)
    assert merge(a, b) == merge(b, a)
    assert merge(merge(a, b), c) == merge(a, merge(b, c))
    assert merge(a, a) == a
    assert merge_all([a, b, c]) == merge(merge(a, b), c)


def _ops() -> list[
    tuple[str, st.SearchStrategy[Any], Callable[[Any, Any], Any], st.SearchStrategy[Any]]
]:
    return [
        (
            "gcounter",
            gcounters,
            lambda x, a: x.increment(*a),
            st.tuples(_replicas, st.integers(0, 5)),
        ),
        ("pncounter", pncounters, lambda x, a: x.add(*a), st.tuples(_replicas, st.integers(-5, 5))),
        ("reset-move", reset_counters(), lambda x, a: x.move(*a), _moves),
        ("reset-count", reset_counters(), lambda x, a: x.count(*a), _counts),
        ("lww", registers(), lambda x, a: x.write(*a), _writes),
        ("gset", gsets, lambda x, a: x.add(a), st.integers(0, 9)),
        (
            "orset-add",
            orsets(),
            lambda x, a: x.add(*a),
            st.tuples(st.integers(0, 4), st.text("xy")),
        ),
        ("orset-rm", orsets(), lambda x, a: x.remove(a), st.integers(0, 4)),
    ]


@pytest.mark.parametrize(("name", "values", "op", "args"), _ops(), ids=[o[0] for o in _ops()])
@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_operations_are_inflations(
    name: str, values: Any, op: Callable[[Any, Any], Any], args: Any, data: st.DataObject
) -> None:
    x = data.draw(values)
    y = op(x, data.draw(args))
    assert merge(x, y) == y


@settings(max_examples=300, deadline=None)
@given(moves=st.lists(_moves, max_size=8), counts=st.lists(_counts, max_size=3), data=st.data())
def test_reset_counter_value_is_order_free(
    moves: list[Any], counts: list[Any], data: st.DataObject
) -> None:
    ops = [("m", m) for m in moves] + [("c", c) for c in counts]

    def build(seq: list[tuple[str, Any]]) -> ResetCounter:
        rc = ResetCounter()
        for kind, a in seq:
            rc = rc.move(*a) if kind == "m" else rc.count(*a)
        return rc

    assert build(data.draw(st.permutations(ops))).value == build(ops).value


def test_reset_counter_ignores_moves_at_or_before_the_count() -> None:
    rc = ResetCounter().move(5, "a", -3).count(5, "s1/t1", 1, 10).move(4, "b", -1).move(6, "c", 2)
    assert rc.value == 12
    assert ResetCounter().move(1, "a", 4).move(2, "b", -1).value == 3


def test_lww_concurrent_view_keeps_each_origins_latest_within_window() -> None:
    reg = LWWRegister[int]()
    reg = reg.write(pack(1000, 0), "s1/t1", 1, 300).write(pack(1500, 0), "s1/t1", 2, 250)
    reg = reg.write(pack(1200, 0), "hq", 1, 200).write(pack(9000, 0), "s1/t2", 1, 400)
    assert reg.value == 400
    assert {w.value for w in reg.concurrent(1000)} == {400}
    assert {w.value for w in reg.concurrent(8000)} == {400, 250, 200}  # t1's 300 dominated


def test_orset_add_wins_over_concurrent_remove() -> None:
    a = ORSet[str]().add("x", "t1")
    b = a.remove("x")
    c = a.add("x", "t2")
    assert merge(b, c).value == frozenset({"x"})
    assert b.value == frozenset()


def test_gcounter_refuses_to_shrink() -> None:
    with pytest.raises(ValueError):
        GCounter().increment("a", -1)
    assert GCounter().increment("a", 2).merge(GCounter().increment("b", 3)).value == 5
