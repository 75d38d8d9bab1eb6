"""Reports on hand-made histories: groups, windows, time zones, and that they add up to
the state's own summary (the same sales, counted the same way)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from conflict import queries, reports
from conflict.errors import ReportError
from conflict.reports import Window
from conflict.state import StoreState
from core.clock import pack
from core.events import (
    Payment,
    RefundIssued,
    RefundLine,
    SaleCompleted,
    SaleLine,
    SaleVoided,
    StockReceived,
)

from .factory import Chain, apply_all, fresh_db, sale_body

DAY1_2330 = int(datetime(2026, 11, 24, 23, 30, tzinfo=UTC).timestamp() * 1000)
DAY2_1000 = int(datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp() * 1000)


def _card_sale(amount: int, auth: str) -> SaleCompleted:
    card = Payment(
        method="card", amount=amount, card_token="tok_visa_0001", card_last4="4242", auth=auth
    )  # type: ignore[arg-type]
    return SaleCompleted(
        receipt=f"C{amount}", lines=[SaleLine(sku="B", qty=1, unit_price=amount)], payments=[card]
    )


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    """s1 sells at 23:30 UTC on the 24th (00:30 on the 25th at +01:00) and on the 25th;
    s2 sells once on the 25th; one s1 sale is voided and another part-refunded."""
    fold, chain = StoreState(), Chain()
    s1_late = chain.make("s1/t1", sale_body([("A", 2, 100)], "R1"), DAY1_2330)
    s1_day = chain.make("s1/t2", sale_body([("A", 1, 100), ("B", 1, 50)], "R2"), DAY2_1000)
    voided = chain.make("s1/t2", sale_body([("B", 3, 50)], "R3"), DAY2_1000 + 1)
    deferred = chain.make("s1/t1", _card_sale(700, "deferred"), DAY2_1000 + 2)
    s2_sale = chain.make("s2/t1", sale_body([("A", 5, 100)], "R9"), DAY2_1000 + 3)
    events = [
        s1_late,
        s1_day,
        voided,
        deferred,
        s2_sale,
        chain.make("s1/t2", SaleVoided(sale=voided.event.id), DAY2_1000 + 4),
        chain.make(
            "s1/t1",
            RefundIssued(sale=s1_day.event.id, lines=[RefundLine(line=1, qty=1, amount=50)]),
            DAY2_1000 + 5,
        ),
        chain.make("s2/t1", StockReceived(sku="A", qty=3), DAY2_1000 + 6),
    ]
    db = fresh_db(fold)
    apply_all(fold, db, events)
    yield db
    db.close()


def _by(conn: sqlite3.Connection, *by: str, **window: object) -> list[dict[str, object]]:
    return reports.sales_report(conn, by, Window(**window))  # type: ignore[arg-type]


def test_sales_by_store_and_day_add_up_to_the_summary(conn: sqlite3.Connection) -> None:
    rows = _by(conn, "store", "day")
    assert [(r["store"], r["day"], r["sales"]) for r in rows] == [
        ("s1", "2026-11-24", 1),
        ("s1", "2026-11-25", 3),
        ("s2", "2026-11-25", 1),
    ]
    s1_25 = rows[1]
    assert (s1_25["gross"], s1_25["voided"], s1_25["refunded"]) == (150 + 150 + 700, 150, 50)
    assert s1_25["net"] == 1000 - 150 - 50
    summary = queries.sales_summary(conn)
    for field in ("sales", "gross", "voided", "refunded", "net"):
        assert sum(int(r[field]) for r in rows) == getattr(summary, field), field  # type: ignore[call-overload]


def test_days_are_cut_in_the_reports_time_zone(conn: sqlite3.Connection) -> None:
    rows = _by(conn, "store", "day", store="s1", utc_offset_min=60)
    assert [(r["day"], r["sales"]) for r in rows] == [("2026-11-25", 4)]
    hours = _by(conn, "till", "hour", store="s1", utc_offset_min=60)
    assert hours[0] == {**hours[0], "till": "s1/t1", "hour": "2026-11-25 00:00", "sales": 1}


def test_window_and_store_filter(conn: sqlite3.Connection) -> None:
    since = pack(DAY2_1000, 0)
    rows = _by(conn, "store", since=since, until=pack(DAY2_1000 + 3, 0))
    assert [(r["store"], r["sales"]) for r in rows] == [("s1", 3)]
    assert _by(conn, "store", store="s9") == []


def test_payments_keep_deferred_cards_apart_and_skip_voided_sales(
    conn: sqlite3.Connection,
) -> None:
    rows = reports.payments_report(conn, Window(store="s1"))
    got = {(r["method"], r["auth"]): (r["payments"], r["amount"], r["kept"]) for r in rows}
    assert got == {("card", "deferred"): (1, 700, 700), ("cash", ""): (2, 350, 350)}
    everywhere = reports.payments_report(conn, Window())
    summary = queries.sales_summary(conn)
    assert sum(int(r["kept"]) for r in everywhere) == summary.gross - summary.voided


def test_deferred_cards_are_the_exposure_per_till(conn: sqlite3.Connection) -> None:
    """Only card payments authorised deferred, of sales not voided; an online card, a
    voided deferred one and a reference that merely says "deferred" are not exposure."""
    fold, chain = StoreState(), Chain()
    events = [
        chain.make("s1/t1", _card_sale(700, "deferred"), DAY2_1000),
        chain.make("s1/t1", _card_sale(300, "online"), DAY2_1000 + 1),
        chain.make("s1/t2", _card_sale(900, "deferred"), DAY2_1000 + 2),
        chain.make("s2/t1", _card_sale(400, "deferred"), DAY2_1000 + 3),
    ]
    cash = Payment(method="cash", amount=100, reference='"deferred"')
    events.append(chain.make("s2/t1", SaleCompleted(receipt="X", payments=[cash],
                  lines=[SaleLine(sku="B", qty=1, unit_price=100)]), DAY2_1000 + 4))  # fmt: skip
    events.append(chain.make("s2/t1", SaleVoided(sale=events[3].event.id), DAY2_1000 + 5))
    db = fresh_db(fold)
    apply_all(fold, db, events)
    try:
        rows = reports.deferred_cards(db)
    finally:
        db.close()
    got = {r["till"]: (r["store"], r["payments"], r["amount"]) for r in rows}
    assert got == {"s1/t1": ("s1", 1, 700), "s1/t2": ("s1", 1, 900)}
    assert [r["amount"] for r in reports.deferred_cards(conn)] == [700]


def test_items_rank_by_revenue_per_store(conn: sqlite3.Connection) -> None:
    """`top` is per store: at HQ a small store is not crowded out by a big one."""
    rows = reports.items_report(conn, Window(), top=2)
    assert [(r["store"], r["sku"], r["qty"], r["revenue"]) for r in rows] == [
        ("s1", "B", 2, 750),
        ("s1", "A", 3, 300),
        ("s2", "A", 5, 500),
    ]
    assert [r["sku"] for r in reports.items_report(conn, Window(), top=1)] == ["B", "A"]


def test_window_between_reads_naive_times_in_the_reports_zone() -> None:
    local = Window.between(datetime(2026, 11, 25), None, utc_offset_min=60)
    # midnight at +01:00 is 23:00 UTC the day before, half an hour before DAY1_2330
    assert local.since == pack(DAY1_2330 - 30 * 60_000, 0)
    aware = Window.between(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), None, utc_offset_min=60)
    assert aware.since == pack(DAY1_2330, 0)  # an explicit zone stands as given
    far = Window.between(None, datetime(9000, 1, 1))  # beyond what an HLC holds: clamped
    assert 0 < far.until < 1 << 63
    with pytest.raises(ReportError, match="since must be before until"):
        Window.between(datetime(2030, 1, 1), datetime(2020, 1, 1))


def test_stock_report_filters_low_levels(conn: sqlite3.Connection) -> None:
    assert reports.stock_report(conn, below=0) == [
        {"store": "s1", "sku": "A", "on_hand": -3},
        {"store": "s1", "sku": "B", "on_hand": -1},  # 1+3+1 sold, void +3, refund +1
        {"store": "s2", "sku": "A", "on_hand": -2},
    ]
    assert reports.stock_report(conn, store="s2") == [{"store": "s2", "sku": "A", "on_hand": -2}]


def test_an_unknown_grouping_is_a_typed_error(conn: sqlite3.Connection) -> None:
    with pytest.raises(ReportError) as caught:
        _by(conn, "store", "weekday")
    assert caught.value.what == "grouping" and caught.value.value == "weekday"
