"""What the till API refuses so that no sale is lost or counted twice, and no card number
is stored: against a real EventLog (tmp SQLite file) and the real StoreState fold.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.replicas.test_api import FakeReplica, client_for, open_log
from tillmesh.core.events import ProductUpserted
from tillmesh.core.log import EventLog

TILL = "s1/t1"


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "till.db", TILL)
    await log.append(ProductUpserted(sku="COLA", name="Cola 33cl", price=150))
    await log.append(ProductUpserted(sku="BREAD", name="Bread", price=250))
    yield log
    await log.close()


@pytest.fixture
async def client(log: EventLog) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(FakeReplica(TILL, log)) as c:
        yield c


def sale(**extra: Any) -> dict[str, Any]:
    return {"lines": [{"sku": "COLA", "qty": 1}], "payments": [{"method": "cash", "amount": 150}],
            **extra}  # fmt: skip


async def sales_count(client: httpx.AsyncClient) -> int:
    return int((await client.get("/status")).json()["sales"]["sales"])


# --- 1. one receipt, one sale, however many retries are in flight -----------------------


async def test_concurrent_retries_of_one_receipt_make_one_sale(client: httpx.AsyncClient) -> None:
    # A client retrying a sale it thinks timed out sends the same receipt again, maybe
    # while the first is still in flight: only one may be taken, the rest told so.
    replies = await asyncio.gather(
        *(client.post("/sales", json=sale(receipt="RACE-7")) for _ in range(8))
    )
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [201] + [409] * 7, [r.text for r in replies]
    assert all("already used" in r.text for r in replies if r.status_code == 409)
    assert len((await client.get("/receipts/RACE-7")).json()["sales"]) == 1
    assert await sales_count(client) == 1
