"""`sales_summary` reads folded per-shift totals; it must equal a scan of every sale."""

from __future__ import annotations

import sqlite3

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.state import StoreState
from core.events import RefundIssued, RefundLine, SaleVoided
from core.fold import Accepted

from .factory import Chain, apply_all, fresh_db, sale_body

SHIFTS = ("", "morning", "evening")


def scanned(conn: sqlite3.Connection, shift: str | None) -> tuple[int, ...]:
    """The summary as a full scan of the sales register (the definition)."""
    where, args = ("WHERE s.shift = ?", (shift,)) if shift is not None else ("", ())
    count, gross, voided, refunded = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(s.total), 0),"
        " COALESCE(SUM(CASE WHEN st.voided THEN s.total ELSE 0 END), 0),"
        " COALESCE(SUM(CASE WHEN st.voided THEN 0 ELSE st.refunded END), 0)"
        f" FROM st_sales s JOIN st_sale_status st ON st.sale_id = s.id {where}",
        args,
    ).fetchone()
    return (count, gross, voided, refunded, gross - voided - refunded)


def history(plan: list[tuple[int, int, bool, int]]) -> list[Accepted]:
    """Per planned sale: (shift index, price, voided?, refunded amount)."""
    chain, out = Chain(), []
    for i, (shift, price, voided, refund) in enumerate(plan):
        origin = ("s1/t1", "s1/t2")[i % 2]
        sale = chain.make(origin, sale_body([("A", 1, price)], f"R{i}", SHIFTS[shift]), 10 + i)
        out.append(sale)
        if voided:
            out.append(chain.make("s1/t2", SaleVoided(sale=sale.event.id), 1000 + i))
        if refund:
            line = RefundLine(line=0, qty=1, amount=refund)
            out.append(
                chain.make("s1/t1", RefundIssued(sale=sale.event.id, lines=[line]), 2000 + i)
            )
    return out


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(
        st.tuples(st.integers(0, 2), st.integers(1, 500), st.booleans(), st.integers(0, 500)),
        max_size=12,
    ),
    data=st.data(),
    cut=st.integers(1, 5),
)
def test_summary_equals_a_scan_of_every_sale(plan, data, cut) -> None:  # type: ignore[no-untyped-def]
    events = data.draw(st.permutations(history(plan)), label="arrival order")
    conn = fresh_db(StoreState())
    try:
        for i in range(0, len(events), cut):
            apply_all(StoreState(), conn, events[i : i + cut])
        apply_all(StoreState(), conn, events[: cut + 1])  # redelivered: counted once
        for shift in (None, *SHIFTS):
            assert tuple(queries.sales_summary(conn, shift)) == scanned(conn, shift)
    finally:
        conn.close()
