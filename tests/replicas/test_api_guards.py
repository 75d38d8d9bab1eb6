"""What the till API refuses so that no sale is lost or counted twice, and no card number
is stored: against a real EventLog (tmp SQLite file) and the real StoreState fold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.events import PriceSet, ProductUpserted
from core.log import EventLog
from replicas.api.app import create_app
from replicas.api.link import link_router
from tests.factories import cash_sale
from tests.replicas.api_kit import FakeReplica, client_for, from_hq, open_log

TILL = "s1/t1"
PRICES = {"COLA": 150, "BREAD": 250}
REFUND_ONE = {"lines": [{"line": 0, "qty": 1}]}


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "till.db", TILL)
    await from_hq(log, ProductUpserted(sku="COLA", name="Cola 33cl", price=150))
    await from_hq(log, ProductUpserted(sku="BREAD", name="Bread", price=250))
    yield log
    await log.close()


@pytest.fixture
async def client(log: EventLog) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(FakeReplica(TILL, log)) as c:
        yield c


def sale(**extra: Any) -> dict[str, Any]:
    """A cash sale of one COLA unless `extra` says otherwise; `payments=[]`: cash, exact."""
    body = {"lines": [{"sku": "COLA", "qty": 1}], "payments": [], **extra}
    total = sum(ln["qty"] * (ln.get("unit_price") or PRICES[ln["sku"]]) for ln in body["lines"])
    body["payments"] = body["payments"] or [{"method": "cash", "amount": total}]
    return body


async def sales_count(client: httpx.AsyncClient) -> int:
    return int((await client.get("/status")).json()["sales"]["sales"])


# --- 1. one receipt, one sale, however many retries are in flight -----------------------


async def test_concurrent_retries_of_one_receipt_make_one_sale(client: httpx.AsyncClient) -> None:
    # A client retrying a sale it thinks timed out sends the same receipt again, maybe
    # while the first is still in flight: one sale is made, every retry gets it back.
    replies = await asyncio.gather(
        *(client.post("/sales", json=sale(receipt="RACE-7")) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * 7 + [201], [r.text for r in replies]
    assert len({r.json()["sale_id"] for r in replies}) == 1
    assert all(
        r.headers.get("Idempotent-Replay") == "true" for r in replies if r.status_code == 200
    )
    assert len((await client.get("/receipts/RACE-7")).json()["sales"]) == 1
    assert await sales_count(client) == 1


async def test_a_retry_after_the_price_changed_is_the_same_sale(
    client: httpx.AsyncClient, log: EventLog
) -> None:
    # The line has no unit price: the till priced it from its catalog. By the retry HQ
    # has repriced COLA and then withdrawn it: the first sale still stands, once.
    request = sale(receipt="POS-1", payments=[{"method": "cash", "amount": 200}])
    first = await client.post("/sales", json=request)
    await log.append(PriceSet(sku="COLA", price=175))
    again = await client.post("/sales", json=request)
    await from_hq(log, ProductUpserted(sku="COLA", name="Cola 33cl", price=175, active=False))
    third = await client.post("/sales", json=request)
    assert (first.status_code, again.status_code, third.status_code) == (201, 200, 200), third.text
    assert first.json() == again.json() == third.json()  # change 50 of 200, as the first time
    assert await sales_count(client) == 1


async def test_change_is_never_more_than_the_cash_tendered(client: httpx.AsyncClient) -> None:
    # A card paid 200 for a 150 sale "with 50 change": the drawer would be 50 short.
    card = {"method": "card", "amount": 200, "card_token": "tok_visa_0001", "card_last4": "4242"}
    r = await client.post("/sales", json=sale(payments=[card], change=50))
    assert r.status_code == 422 and "more than the cash tendered (0)" in r.text, r.text
    cash = {"method": "cash", "amount": 200}
    assert (await client.post("/sales", json=sale(payments=[cash], change=50))).status_code == 201
    assert await sales_count(client) == 1


async def test_a_withdrawn_product_is_not_sold_even_with_a_price(
    client: httpx.AsyncClient, log: EventLog
) -> None:
    # The till page always sends the unit price it showed: the catalog check was skipped.
    await from_hq(log, ProductUpserted(sku="BREAD", name="Bread", price=250, active=False))
    priced = sale(lines=[{"sku": "BREAD", "qty": 1, "unit_price": 250}])
    r = await client.post("/sales", json=priced)
    assert r.status_code == 409 and "inactive" in r.text, r.text
    ad_hoc = sale(lines=[{"sku": "MISC", "qty": 1, "unit_price": 99}])  # not in the catalog
    assert (await client.post("/sales", json=ad_hoc)).status_code == 201
    assert await sales_count(client) == 1


async def test_another_sale_with_a_used_receipt_is_refused(client: httpx.AsyncClient) -> None:
    first = await client.post("/sales", json=sale(receipt="R-9"))
    other = sale(receipt="R-9", lines=[{"sku": "COLA", "qty": 2}])
    again = await client.post("/sales", json=other)
    assert first.status_code == 201 and again.status_code == 409, again.text
    assert "already used by another sale" in again.text
    assert await sales_count(client) == 1


async def test_a_card_sale_retried_after_the_link_came_back_is_the_same_sale(
    log: EventLog,
) -> None:
    # Offline, the card is authorised "deferred"; the retry finds HQ reachable again, so
    # its body would say "online": still the same sale, not a second charge.
    replica = FakeReplica(TILL, log)
    card = {"method": "card", "amount": 150, "card_token": "tok_visa_0001", "card_last4": "4242"}
    async with client_for(replica) as c:
        first = await c.post("/sales", json=sale(receipt="CARD-1", payments=[card]))
        replica.is_online = True
        retry = await c.post("/sales", json=sale(receipt="CARD-1", payments=[card]))
        stored = (await c.get(f"/sales/{first.json()['sale_id']}")).json()
    assert (first.status_code, retry.status_code) == (201, 200), retry.text
    assert retry.json()["sale_id"] == first.json()["sale_id"]
    assert stored["payments"][0]["auth"] == "deferred"


# --- 2. a refunded sale is not voided: its stock and money would come back twice ---------


async def on_hand(client: httpx.AsyncClient, sku: str) -> int:
    return int((await client.get(f"/stock/{sku}")).json()["on_hand"])


@pytest.mark.parametrize("refunded", [4, 1], ids=["fully", "partly"])
async def test_a_refunded_sale_cannot_be_voided(client: httpx.AsyncClient, refunded: int) -> None:
    await client.post("/stock/COLA/count", json={"count": 10})
    sold = await client.post("/sales", json=sale(lines=[{"sku": "COLA", "qty": 4}], payments=[]))
    sale_id = sold.json()["sale_id"]
    refund = {"lines": [{"line": 0, "qty": refunded}]}
    assert (await client.post(f"/sales/{sale_id}/refunds", json=refund)).status_code == 201
    assert await on_hand(client, "COLA") == 6 + refunded

    void = await client.post(f"/sales/{sale_id}/void", json={"reason": "changed mind"})
    assert void.status_code == 409, void.text
    assert "has refunds" in void.text and "refund the remaining lines" in void.text
    assert await on_hand(client, "COLA") == 6 + refunded  # not restocked twice
    assert (await client.get(f"/sales/{sale_id}")).json()["voided"] is False


# --- 3. a line refunds at most its value ------------------------------------------------


async def test_a_line_refunds_at_most_its_value(client: httpx.AsyncClient) -> None:
    lines = [{"sku": "BREAD", "qty": 2}, {"sku": "COLA", "qty": 4}]  # 500 and 600
    sold = (await client.post("/sales", json=sale(lines=lines))).json()
    url = f"/sales/{sold['sale_id']}/refunds"
    assert (await client.post(url, json={"lines": [{"line": 0, "qty": 1}]})).json()["amount"] == 250
    # Within the sale's total (1100), but 250 + 449 is more than line 0 is worth.
    over = await client.post(url, json={"lines": [{"line": 0, "qty": 1, "amount": 449}]})
    assert over.status_code == 409, over.text
    assert "line 0" in over.text and "at most 250" in over.text
    # Two entries for one line in a request count together.
    twice = {"lines": [{"line": 1, "qty": 1, "amount": 400}, {"line": 1, "qty": 1, "amount": 201}]}
    assert (await client.post(url, json=twice)).status_code == 409
    ok = await client.post(url, json={"lines": [{"line": 0, "qty": 1, "amount": 250}]})
    assert ok.status_code == 201, ok.text
    assert (await client.get(f"/sales/{sold['sale_id']}")).json()["refunded"] == 500


# --- 4. a closed shift takes no more sales; an unknown one does -------------------------


async def test_a_sale_naming_no_shift_counts_in_the_tills_open_shift(
    client: httpx.AsyncClient,
) -> None:
    # The till page names no shift: its sales were in no drawer count (over_short +115).
    opened = {"shift": "MON-AM", "float_amount": 5000, "cashier": "ana"}
    assert (await client.post("/shifts", json=opened)).status_code == 201
    assert (await client.post("/sales", json=sale(receipt="R-1"))).status_code == 201
    retry = await client.post("/sales", json=sale(receipt="R-1"))  # same sale, no shift named
    closed = await client.post("/shifts/MON-AM/close", json={"counted_cash": 5150})
    after = await client.post("/sales", json=sale())  # no open shift now: in none
    assert retry.status_code == 200 and after.status_code == 201, after.text
    totals = closed.json()
    assert (totals["sales"], totals["cash_taken"], totals["over_short"]) == (1, 150, 0)


async def test_no_sale_into_a_shift_closed_here(client: httpx.AsyncClient) -> None:
    await client.post("/shifts", json={"shift": "morning", "float_amount": 1000})
    assert (await client.post("/sales", json=sale(shift="morning"))).status_code == 201
    closed = (await client.post("/shifts/morning/close", json={"counted_cash": 1150})).json()
    assert closed["over_short"] == 0

    late = await client.post("/sales", json=sale(shift="morning"))
    assert late.status_code == 409, late.text
    assert "shift 'morning' is closed" in late.text and "open a new shift" in late.text
    assert (await client.get("/shifts/morning")).json() == closed  # the count still holds
    # A shift this till never heard of may be open on another till whose events have
    # not arrived: the till sells on.
    assert (await client.post("/sales", json=sale(shift="s1-t2-shift-9"))).status_code == 201


async def test_a_sale_racing_a_close_is_in_the_count_or_refused(client: httpx.AsyncClient) -> None:
    for n in range(5):
        await client.post("/shifts", json={"shift": f"S{n}", "float_amount": 0})
        sold, close = await asyncio.gather(
            client.post("/sales", json=sale(shift=f"S{n}")),
            client.post(f"/shifts/S{n}/close", json={"counted_cash": 0}),
        )
        assert sold.status_code in (201, 409) and close.status_code == 200
        assert close.json()["sales"] == (sold.status_code == 201), sold.text
        assert (await client.get(f"/shifts/S{n}")).json() == close.json()


# --- 5. HQ is a read replica: it does not sell ------------------------------------------


async def test_hq_refuses_sales_voids_and_refunds_but_moves_its_stock(tmp_path: Path) -> None:
    hq_log = await open_log(tmp_path / "hq.db", "hq")
    try:
        await hq_log.append(ProductUpserted(sku="COLA", name="Cola 33cl", price=150))
        # A sale HQ's log holds of its own, as a build before this check could make one.
        legacy = await hq_log.append(cash_sale(sku="COLA", price=150, receipt="HQ-1"))
        async with client_for(FakeReplica("hq", hq_log)) as hq:
            sold = await hq.post("/sales", json=sale())
            void = await hq.post(f"/sales/{legacy.id}/void")
            refund = await hq.post(f"/sales/{legacy.id}/refunds", json=REFUND_ONE)
            for r in (sold, void, refund):
                assert r.status_code == 409 and "on a till" in r.text, r.text
            assert hq_log.version_vector()["hq"] == 2  # nothing appended
            received = await hq.post("/stock/COLA/receive", json={"qty": 40})
            assert received.status_code == 201 and received.json()["on_hand"] == 39
    finally:
        await hq_log.close()


# --- 8. every request model is strict --------------------------------------------------


LENIENT_RESOLVES = {
    "unknown field": {"action": "accept", "by": "ana", "extra": "x"},
    "count as a string": {"action": "recount", "by": "ana", "count": "12"},
    "price as a string": {"action": "choose_price", "by": "ana", "price": "150"},
    "price as a float": {"action": "choose_price", "by": "ana", "price": 150.0},
}


@pytest.mark.parametrize("body", LENIENT_RESOLVES.values(), ids=list(LENIENT_RESOLVES))
async def test_resolve_is_strict(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    # Refused before the conflict is looked up: no 404 for the unknown id.
    r = await client.post("/conflicts/c-1/resolve", json=body)
    assert r.status_code == 422, r.text


@dataclass
class FakeLink:
    enabled: bool = True
    calls: list[bool] = field(default_factory=list)

    async def set_hq_link(self, enabled: bool) -> bool:
        self.calls.append(enabled)
        self.enabled = enabled
        return True

    def hq_link_enabled(self) -> bool:
        return self.enabled


async def test_link_switch_is_strict(log: EventLog) -> None:
    link = FakeLink()
    app = create_app(FakeReplica(TILL, log))
    app.include_router(link_router(link))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for bad in ({"enabled": "no"}, {"enabled": 0}, {"enabled": False, "extra": 1}):
            r = await c.put("/link/hq", json=bad)
            assert r.status_code == 422, (bad, r.text)
        assert link.calls == []  # "no" was never read as false (nor as true)
        r = await c.put("/link/hq", json={"enabled": False})
        assert r.status_code == 200 and r.json() == {"enabled": False}
    assert link.calls == [False]


# --- 6. no card number in any free text a client sends ------------------------------------

PAN = "4111111111111111"  # the classic test Visa number: Luhn-valid
SPACED = "4111 1111 1111 1111"

PAN_REQUESTS = {
    "sale cashier": ("/sales", sale(cashier=SPACED)),
    "sale receipt": ("/sales", sale(receipt=PAN)),
    "sale shift": ("/sales", sale(shift=f"card {PAN}")),
    "void reason": ("/sales/{sale}/void", {"reason": f"customer card {SPACED}"}),
    "refund reason": ("/sales/{sale}/refunds", {**REFUND_ONE, "reason": PAN}),
    "stock reference": ("/stock/COLA/receive", {"qty": 1, "reference": PAN}),
    "stock adjust reason": ("/stock/COLA/adjust", {"delta": -1, "reason": SPACED}),
    "shift cashier": ("/shifts", {"float_amount": 0, "cashier": PAN}),
    "shift id": ("/shifts", {"shift": PAN, "float_amount": 0}),
    "resolution by": ("/conflicts/c-1/resolve", {"action": "accept", "by": PAN}),
    "resolution reason": ("/conflicts/c-1/resolve", {"action": "accept", "by": "a", "reason": PAN}),
}


@pytest.mark.parametrize("case", PAN_REQUESTS, ids=list(PAN_REQUESTS))
async def test_card_numbers_are_refused_in_free_text(
    client: httpx.AsyncClient, log: EventLog, case: str
) -> None:
    sold = (await client.post("/sales", json=sale())).json()
    before = log.version_vector()
    url, body = PAN_REQUESTS[case]
    r = await client.post(url.format(sale=sold["sale_id"]), json=body)
    assert r.status_code == 422, r.text
    assert "full card number" in r.text and PAN not in r.text and SPACED not in r.text
    assert log.version_vector() == before  # nothing stored, nothing replicated


async def test_card_numbers_are_refused_in_product_names(tmp_path: Path) -> None:
    async with await open_log(tmp_path / "hq.db", "hq") as hq_log:
        hq = client_for(FakeReplica("hq", hq_log))
        async with hq:
            r = await hq.put("/catalog/TEA", json={"name": f"Tea {SPACED}", "price": 300})
            assert r.status_code == 422 and "full card number" in r.text, r.text
            assert (await hq.put("/catalog/TEA", json={"name": "Tea", "price": 3})).is_success


# --- 7. a client receipt never takes the form a till generates -------------------------


@pytest.mark.parametrize("receipt", ["s1-t2-000001", "s1-t9-1000000", "s1-t_3-000042"])
async def test_receipts_in_a_tills_generated_form_are_refused(
    client: httpx.AsyncClient, receipt: str
) -> None:
    # s1/t2's next generated receipt could be exactly this: a receipt collision made here.
    r = await client.post("/sales", json=sale(receipt=receipt))
    assert r.status_code == 422, r.text
    assert "generated" in r.text and "leave receipt out" in r.text
    assert await sales_count(client) == 0


@pytest.mark.parametrize(
    "receipt",
    # another store's form is left alone: "INV-2024-000123" could be store INV's
    ["PAPER-17", "s1-t2-17", "INV 000001", "000123456", "INV-2024-000123", "s2-t1-000001"],
)
async def test_other_client_receipts_are_taken(client: httpx.AsyncClient, receipt: str) -> None:
    r = await client.post("/sales", json=sale(receipt=receipt))
    assert r.status_code == 201 and r.json()["receipt"] == receipt, r.text


async def test_a_retry_failed_over_to_another_till_of_the_store_gets_the_sale(
    client: httpx.AsyncClient, log: EventLog, tmp_path: Path
) -> None:
    # A POS front end whose till stopped answering sends the same sale, same receipt, to
    # the next till: once that till holds the sale, it answers with it (was: 409).
    first = await client.post("/sales", json=sale(receipt="POS-9"))
    assert first.status_code == 201
    other = await open_log(tmp_path / "t2.db", "s1/t2")
    try:
        for origin, seq in log.version_vector().items():
            await other.ingest_raw(await log.read_range(origin, 1, seq))
        async with client_for(FakeReplica("s1/t2", other)) as t2:
            again = await t2.post("/sales", json=sale(receipt="POS-9"))
            assert again.status_code == 200, again.text
            assert again.headers["Idempotent-Replay"] == "true"
            assert again.json() == first.json()
            different = await t2.post("/sales", json=sale(receipt="POS-9", lines=[
                {"sku": "BREAD", "qty": 1}]))  # fmt: skip
            assert different.status_code == 409, different.text
            assert await sales_count(t2) == 1
    finally:
        await other.close()
