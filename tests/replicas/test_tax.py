"""Tax: what the till stores in a sale, what its sale view (the receipt) shows and what
the tax report sums agree, for any basket, with prices tax-inclusive or -exclusive.

The real app over a real log per example; the arithmetic is checked against the
definitions in `replicas.api.tax` written out again here with Fractions (exact), not
against the module's own helpers.
"""

from __future__ import annotations

import asyncio
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conflict import reports
from conflict.reports import Window
from core.events import Payment, ProductUpserted, RefundIssued, SaleCompleted, SaleLine
from replicas.api.app import create_app
from replicas.api.common import Shop
from replicas.api.tax import line_tax, refund_tax
from tests.factories import chain
from tests.replicas.api_kit import TILL, FakeReplica, event_body, from_hq, open_log

RATES = (0, 550, 700, 2000, 2500)  # basis points
SKUS = [f"SKU-{i}" for i in range(6)]


def exact_tax(value: int, rate: int, mode: str) -> int:
    """round-half-up of the exact tax (Fractions: no float, no shared helper)."""
    exact = Fraction(value * rate, 10_000 + rate if mode == "inclusive" else 10_000)
    return int(exact + Fraction(1, 2)) if exact else 0


@pytest.mark.parametrize(
    ("value", "rate", "mode", "tax"),
    [
        (1000, 2000, "inclusive", 167),  # 1000 * 2000 / 12000 = 166.67
        (1000, 2000, "exclusive", 200),
        (105, 500, "inclusive", 5),  # 5.0 exactly
        (10, 500, "exclusive", 1),  # 0.5 rounds up
        (0, 2000, "inclusive", 0),
        (999, 0, "exclusive", 0),
    ],
)
def test_line_tax_rounds_half_up_per_line(value: int, rate: int, mode: Any, tax: int) -> None:
    assert line_tax(value, rate, mode) == tax == exact_tax(value, rate, mode)


@given(
    tax=st.integers(0, 10_000),
    parts=st.lists(st.integers(1, 5_000), min_size=1, max_size=8),
)
def test_refunds_in_parts_give_back_exactly_the_line_tax(tax: int, parts: list[int]) -> None:
    total = max(sum(parts), tax)  # the line's total holds its tax
    parts[-1] += total - sum(parts)
    given_back, done = [], 0
    for amount in parts:
        given_back.append(refund_tax(tax, total, done, amount))
        done += amount
    assert sum(given_back) == tax
    assert all(0 <= g <= a for g, a in zip(given_back, parts, strict=True))


Line = tuple[int, int, int]  # (sku index, qty, discount share in % of the line)
catalog = st.lists(st.sampled_from(RATES), min_size=len(SKUS), max_size=len(SKUS))
prices = st.lists(st.integers(1, 50_000), min_size=len(SKUS), max_size=len(SKUS))
baskets = st.lists(
    st.tuples(st.integers(0, len(SKUS) - 1), st.integers(1, 7), st.integers(0, 10)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(["inclusive", "exclusive"]),
    rates=catalog,
    unit=prices,
    basket=baskets,
    refund_parts=st.integers(1, 3),
)
def test_stored_tax_receipt_and_report_agree(
    mode: str, rates: list[int], unit: list[int], basket: list[Line], refund_parts: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_sell_and_refund(Path(tmp), mode, rates, unit, basket, refund_parts))


async def _sell_and_refund(
    tmp: Path, mode: str, rates: list[int], unit: list[int], basket: list[Line], parts: int
) -> None:
    log = await open_log(tmp / "till.db")
    try:
        products = [
            ProductUpserted(sku=s, name=f"Product {s}", price=p, tax_rate_bp=r)
            for s, p, r in zip(SKUS, unit, rates, strict=True)
        ]
        await from_hq(log, *products)
        app = create_app(FakeReplica(TILL, log), shop=Shop(tax_mode=mode))  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://till") as client:
            await _check(client, log, mode, rates, unit, basket, parts)
    finally:
        await log.close()


async def _check(
    client: httpx.AsyncClient,
    log: Any,
    mode: str,
    rates: list[int],
    unit: list[int],
    basket: list[Line],
    parts: int,
) -> None:
    lines = [
        {"sku": SKUS[i], "qty": q, "discount": q * unit[i] * pct // 100} for i, q, pct in basket
    ]
    expected = [
        exact_tax(ln["qty"] * unit[i] - ln["discount"], rates[i], mode)
        for ln, (i, _, _) in zip(lines, basket, strict=True)
    ]
    values = [
        ln["qty"] * unit[i] - ln["discount"] for ln, (i, _, _) in zip(lines, basket, strict=True)
    ]
    total = sum(values) + (sum(expected) if mode == "exclusive" else 0)
    r = await client.post(
        "/sales", json={"lines": lines, "payments": [{"method": "cash", "amount": total}]}
    )
    assert r.status_code == 201, r.text
    sale_id = r.json()["sale_id"]

    stored = await event_body(log, sale_id)  # what the log holds
    assert isinstance(stored, SaleCompleted) and stored.tax_mode == mode
    assert [ln.tax for ln in stored.lines] == expected
    assert [ln.tax_rate_bp for ln in stored.lines] == [rates[i] for i, _, _ in basket]
    assert stored.total == total

    view = (await client.get(f"/sales/{sale_id}")).json()  # what the receipt shows
    assert [ln["tax"] for ln in view["lines"]] == expected
    assert (view["total"], view["tax_mode"]) == (total, mode)

    report = (await client.get("/reports/tax")).json()
    assert sum(row["tax"] for row in report) == sum(expected)
    for rate in {rates[i] for i, _, _ in basket}:
        in_rate = [t for t, (i, _, _) in zip(expected, basket, strict=True) if rates[i] == rate]
        assert sum(row["tax"] for row in report if row["rate_bp"] == rate) == sum(in_rate)

    # Refund the first line in `parts` pieces: its whole tax comes back, no more.
    first = lines[0]["qty"]
    pieces = [first // parts + (1 if k < first % parts else 0) for k in range(parts)]
    refunded_tax = refunded = 0
    for qty in (p for p in pieces if p):
        r = await client.post(
            f"/sales/{sale_id}/refunds", json={"lines": [{"line": 0, "qty": qty}]}
        )
        assert r.status_code == 201, r.text
        body = await event_body(log, r.json()["refund_id"])
        assert isinstance(body, RefundIssued)
        assert r.json()["tax"] == sum(ln.tax for ln in body.lines)
        refunded_tax += r.json()["tax"]
        refunded += r.json()["amount"]
    assert refunded_tax == expected[0]
    assert refunded == values[0] + (expected[0] if mode == "exclusive" else 0)
    report = (await client.get("/reports/tax")).json()
    assert sum(row["refunded_tax"] for row in report) == expected[0]
    assert sum(row["net_tax"] for row in report) == sum(expected) - expected[0]


async def test_sales_from_before_tax_are_reported_as_not_recorded(tmp_path: Path) -> None:
    log = await open_log(tmp_path / "till.db")
    try:
        old = SaleCompleted(
            receipt="OLD-1",
            lines=[SaleLine("COLA", 2, 150)],
            payments=[Payment(method="cash", amount=300)],
        )
        assert old.min_schema() < 4  # as a build before tax wrote it
        [event] = chain("s1/t2", [old], first_hlc=log.clock.now())
        assert not (await log.ingest([event], peer="s1/t2")).rejected
        rows = await log.read(lambda c: reports.tax_report(c, Window()))
    finally:
        await log.close()
    assert [(r["rate_bp"], r["tax"], r["gross"]) for r in rows] == [(None, 0, 300)]
