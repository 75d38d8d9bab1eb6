"""Detection against plain reference computations over the event set, any arrival order.

Oversell replays only the minutes its bucket bound flags; here a naive replay of every
move and count (from tests/conflict/model.py) must find exactly the same negative runs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict.detect import detect
from conflict.policies import Policies
from conflict.state import StoreState
from core.events import RefundIssued, SaleCompleted, SaleVoided, StockCounted
from core.fold import Accepted

from .factory import apply_all, fresh_db, scenarios
from .model import StockKey, moves, store

Runs = set[tuple[StockKey, tuple[str, ...]]]


def naive_oversell(events: list[Accepted]) -> Runs:
    """Every stretch below zero of every (store, sku): ((store, sku), ids of the moves
    taking/keeping it there)."""
    timeline = [(hlc, 0, mid, line, key, d) for hlc, key, mid, line, d in moves(events)]
    for a in events:
        if isinstance(a.body, StockCounted):
            e = a.event
            timeline.append(
                (e.hlc, 1, e.origin, e.seq, (store(e.origin), a.body.sku), a.body.count)
            )
    level: dict[StockKey, int] = {}
    open_runs: dict[StockKey, list[str]] = {}
    runs: Runs = set()
    for _, is_count, mid, _, key, n in sorted(timeline):
        level[key] = n if is_count else level.get(key, 0) + n
        if level[key] < 0:
            run = open_runs.setdefault(key, [])
            if n < 0 and mid not in run:
                run.append(mid)
        elif key in open_runs:
            runs.add((key, tuple(sorted(open_runs.pop(key)))))
    runs |= {(key, tuple(sorted(run))) for key, run in open_runs.items()}
    return runs


def _naive_doubles(events: list[Accepted], body_type: type) -> set[str]:
    origins: dict[str, set[str]] = {}
    for a in events:
        if isinstance(a.body, body_type):
            origins.setdefault(a.body.sale, set()).add(a.event.origin)  # type: ignore[attr-defined]
    return {sale for sale, o in origins.items() if len(o) > 1}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), events=scenarios(max_events=40))
def test_detect_matches_naive_reference(data: st.DataObject, events: list[Accepted]) -> None:
    fold = StoreState()
    conn = apply_all(fold, fresh_db(fold), data.draw(st.permutations(events)),
                     data.draw(st.lists(st.integers(0, 60), max_size=4)))  # fmt: skip
    found = detect(conn, Policies())
    conn.close()
    got = {((c.store, c.subject), tuple(sorted(c.events, key=str)))
           for c in found if c.kind == "oversell"}  # fmt: skip
    want = {(key, tuple(sorted(ids, key=str))) for key, ids in naive_oversell(events)}
    assert got == want
    assert {c.subject for c in found if c.kind == "double_void"} == _naive_doubles(
        events, SaleVoided
    )
    assert {c.subject for c in found if c.kind == "double_refund"} == _naive_doubles(
        events, RefundIssued
    )
    receipts: dict[str, int] = {}
    for a in events:
        if isinstance(a.body, SaleCompleted):
            receipts[a.body.receipt] = receipts.get(a.body.receipt, 0) + 1
    collided = {r for r, n in receipts.items() if n > 1}
    assert {c.subject for c in found if c.kind == "receipt_collision"} == collided
