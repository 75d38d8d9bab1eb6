"""Convergence laws of the SQL fold, and agreement with the reference models.

- any permutation of the same event set, cut into batches anywhere -> same digest;
- applying events again (whole set, or duplicates within a batch) changes nothing;
- stock, catalog and sales figures equal the sequential / CRDT reference models.
"""

from __future__ import annotations

from typing import Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict.queries import catalog, sales_summary, state_digest
from conflict.state import StoreState
from core.fold import Accepted

from .factory import apply_all, fresh_db, scenarios, stock_by_key
from .model import model_catalog, model_sales, model_stock, model_stock_crdt

Policy = Literal["latest", "hq_wins", "lowest"]
_cuts = st.lists(st.integers(0, 60), max_size=6)
_policies = st.sampled_from(("latest", "hq_wins", "lowest"))


def _digest(events: list[Accepted], cuts: list[int], policy: Policy = "latest") -> str:
    fold = StoreState(price_policy=policy)
    conn = apply_all(fold, fresh_db(fold), events, cuts)
    try:
        return state_digest(conn)
    finally:
        conn.close()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=scenarios(), policy=_policies)
def test_any_order_any_batching_same_digest(
    data: st.DataObject, events: list[Accepted], policy: Policy
) -> None:
    shuffled = data.draw(st.permutations(events))
    cuts = data.draw(_cuts)
    assert _digest(shuffled, cuts, policy) == _digest(events, [], policy)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), events=scenarios())
def test_reapplying_is_idempotent(data: st.DataObject, events: list[Accepted]) -> None:
    fold = StoreState()
    conn = apply_all(fold, fresh_db(fold), events, data.draw(_cuts))
    once = state_digest(conn)
    again = data.draw(st.permutations(events + events[: len(events) // 2]))
    apply_all(fold, conn, again, data.draw(_cuts))  # duplicates within and across batches
    assert state_digest(conn) == once
    conn.close()


@settings(max_examples=300, deadline=None)
@given(data=st.data(), events=scenarios(), policy=_policies)
def test_fold_agrees_with_reference_models(
    data: st.DataObject, events: list[Accepted], policy: Policy
) -> None:
    fold = StoreState(price_policy=policy)
    conn = apply_all(fold, fresh_db(fold), data.draw(st.permutations(events)), data.draw(_cuts))
    levels = stock_by_key(conn)
    assert levels == model_stock(events) == model_stock_crdt(events)
    products = {p["sku"]: (p["name"], p["price"], p["tax_rate_bp"], int(p["active"]))
                for p in catalog(conn)}  # fmt: skip
    assert products == model_catalog(events, policy, fold.window_ms)
    assert tuple(sales_summary(conn)) == model_sales(events)
    conn.close()
