"""Detection against plain reference computations over the event set, any arrival order.

Oversell replays only the minutes its bucket bound flags; here a naive replay of every
move and count (from tests/conflict/model.py) must find exactly the same negative runs.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tillmesh.conflict.detect import detect
from tillmesh.conflict.policies import Policies
from tillmesh.conflict.state import StoreState
from tillmesh.core.events import RefundIssued, SaleCompleted, SaleVoided, StockCounted
from tillmesh.core.fold import Accepted

from .factory import apply_all, fresh_db, scenarios
from .model import moves

Runs = set[tuple[str, tuple[str, ...]]]


def naive_oversell(events: list[Accepted]) -> Runs:
    """Every stretch below zero of every SKU: (sku, ids of the moves taking/keeping it there)."""
    timeline = [(hlc, 0, mid, line, sku, d) for hlc, sku, mid, line, d in moves(events)]
    for a in events:
        if isinstance(a.body, StockCounted):
            e = a.event
            timeline.append((e.hlc, 1, e.origin, e.seq, a.body.sku, a.body.count))
    level: dict[str, int] = {}
    open_runs: dict[str, list[str]] = {}
    runs: Runs = set()
    for _, is_count, mid, _, sku, n in sorted(timeline):
        level[sku] = n if is_count else level.get(sku, 0) + n
        if level[sku] < 0:
            run = open_runs.setdefault(sku, [])
            if n < 0 and mid not in run:
                run.append(mid)
        elif sku in open_runs:
            runs.add((sku, tuple(sorted(open_runs.pop(sku)))))
    runs |= {(sku, tuple(sorted(run))) for sku, run in open_runs.items()}
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
    got = {(c.subject, tuple(sorted(c.events, key=str))) for c in found if c.kind == "oversell"}
    want = {(sku, tuple(sorted(ids, key=str))) for sku, ids in naive_oversell(events)}
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
