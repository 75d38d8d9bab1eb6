"""`GET /reports/...` on a till over a real log: the CLI's figures, over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from core.events import ProductUpserted, StockReceived
from core.log import EventLog
from tests.replicas.api_kit import FakeReplica, cash, client_for, open_log, sell

TILL = "s1/t1"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    log: EventLog = await open_log(tmp_path / "till.db", TILL)
    await log.append(ProductUpserted(sku="COLA", name="Cola 33cl", price=150))
    await log.append(StockReceived(sku="COLA", qty=10))
    async with client_for(FakeReplica(TILL, log)) as c:
        yield c
    await log.close()


async def test_sales_payments_items_and_stock(client: httpx.AsyncClient) -> None:
    kept = await sell(client)  # 2 COLA for 300
    gone = await sell(client, lines=[{"sku": "COLA", "qty": 1}], payments=[cash(200)])
    assert (await client.post(f"/sales/{gone['sale_id']}/void")).status_code == 201
    sales = (await client.get("/reports/sales", params={"by": "store,till"})).json()
    assert sales == [{"store": "s1", "till": TILL, "sales": 2, "gross": 450, "voided": 150,
                      "refunded": 0, "net": 300}]  # fmt: skip
    payments = (await client.get("/reports/payments")).json()
    assert [(p["method"], p["kept"]) for p in payments] == [("cash", 300)]
    assert payments[0]["change_given"] == 0  # the voided sale (200 for 150) is left out
    items = (await client.get("/reports/items", params={"top": 1})).json()
    assert items == [{"store": "s1", "sku": "COLA", "qty": 2, "revenue": 300, "sales": 1}]
    stock = (await client.get("/reports/stock", params={"below": 100})).json()
    assert stock == [{"store": "s1", "sku": "COLA", "on_hand": 8}]
    assert kept["sale_id"] != gone["sale_id"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"by": "store,weekday"}, "weekday"),
        ({"since": "2030-01-01", "until": "2020-01-01"}, "since must be before until"),
        ({"utc_offset": 9999}, "less than or equal"),
        ({"since": "yesterday"}, "datetime"),
    ],
)
async def test_bad_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, object], message: str
) -> None:
    r = await client.get("/reports/sales", params=params)
    assert r.status_code == 422 and message in r.text, r.text


async def test_cash_kept_is_tendered_less_change(client: httpx.AsyncClient) -> None:
    await sell(client, payments=[cash(500)])  # 2 COLA = 300, paid 500: 200 back
    payments = (await client.get("/reports/payments")).json()
    assert payments == [
        {"store": "s1", "method": "cash", "auth": "", "settlement": "", "payments": 1,
         "amount": 500, "change_given": 200, "kept": 300}
    ]  # fmt: skip
