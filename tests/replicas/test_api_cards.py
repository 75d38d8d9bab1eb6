"""Card payments at the till API against the acquirer as a real process (issue 17):
the till, not the client, decides online or deferred; a decline refuses the sale;
offline, only under the floor limits HQ set; beyond them, a manager's recorded word."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.events import CardLimitsSet, ProductUpserted, SaleCompleted
from core.log import EventLog
from replicas.api.app import create_app
from replicas.api.auth import Access
from replicas.api.tokens import TokenStore
from replicas.payments.adapter import HttpAcquirer
from tests.acquirer_kit import AcquirerProc
from tests.replicas.api_kit import TILL, FakeReplica, event_body, from_hq, open_log


def card(amount: int, token: str = "tok_visa_0001", **extra: Any) -> dict[str, Any]:
    return {"method": "card", "amount": amount, "card_token": token, "card_last4": "4242",
            "reference": "T1-0001", **extra}  # fmt: skip


def sale(amount: int, **pay: Any) -> dict[str, Any]:
    return {"lines": [{"sku": "MISC", "qty": 1, "unit_price": amount}],
            "payments": [card(amount, **pay)]}  # fmt: skip


class Till:
    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, str], replica: FakeReplica):
        self.client, self.tokens, self.replica = client, tokens, replica

    async def post(self, body: dict[str, Any], who: str = "cashier") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"}
        return await self.client.post("/sales", json=body, headers=auth)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "log.db", TILL)
    await from_hq(log, ProductUpserted(sku="COLA", name="Cola", price=150))
    yield log
    await log.close()


@pytest.fixture
async def till(tmp_path: Path, log: EventLog, acquirer: AcquirerProc) -> AsyncIterator[Till]:
    store = TokenStore(tmp_path / "api-tokens.json")
    tokens = {"cashier": store.issue("front end", "cashier"),
              "manager": store.issue("Mia's badge", "manager", person="M007")}  # fmt: skip
    processor = HttpAcquirer(acquirer.url, timeout_s=1.0)
    replica = FakeReplica(TILL, log, processor=processor)
    app = create_app(replica, access=Access(store, loopback_only=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield Till(c, tokens, replica)
    await processor.aclose()


async def _stored(log: EventLog, r: httpx.Response) -> SaleCompleted:
    assert r.status_code == 201, r.text
    body = await event_body(log, r.json()["sale_id"])
    assert isinstance(body, SaleCompleted)
    return body


async def test_online_approval_is_part_of_the_sale(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    r = await till.post(sale(1250, auth="deferred"))  # what the client says is not read
    (pay,) = (await _stored(log, r)).payments
    (record,) = await acquirer.records()
    assert (pay.auth, pay.approval) == ("online", record["reference"])
    assert r.json()["payments"][0]["approval"] == record["reference"]
    assert (record["kind"], record["amount"], record["last4"]) == ("authorise", 1250, "4242")


async def test_an_online_decline_refuses_the_sale(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    r = await till.post(sale(900, token="tok_decline_01"))
    assert r.status_code == 402 and "declined by the processor (do not honour)" in r.text
    assert log.head(TILL)[0] == 0  # nothing stored
    assert [x["status"] for x in await acquirer.records()] == ["declined"]


async def test_cut_off_from_the_processor_under_limits_deferred_above_refused(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    acquirer.kill(signal.SIGKILL)
    await from_hq(log, CardLimitsSet(per_payment=5_000, till_total=8_000, till_count=3,
                                     max_age_s=3600, store="s1"))  # fmt: skip
    # A client claiming "online" with no processor reachable is stored deferred.
    (pay,) = (await _stored(log, await till.post(sale(4_000, auth="online")))).payments
    assert (pay.auth, pay.approval, pay.override_by) == ("deferred", "", "")
    # The issue's probe: 145,900.00 offline is refused, saying which limit and what to do.
    big = await till.post(sale(14_590_000))
    assert big.status_code == 409, big.text
    assert "145,900.00 is over the offline floor limit of 50.00" in big.text
    assert "take another method" in big.text
    # Per till: 4,000 held, 4,500 more is over 8,000.
    total = await till.post(sale(4_500))
    assert total.status_code == 409 and "over its limit of 80.00" in total.text
    assert log.head(TILL)[0] == 1


async def test_a_manager_takes_a_card_offline_beyond_the_limits_on_record(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    await acquirer.set_mode("outage")
    r = await till.post(sale(30_000, override=True))  # default limit per payment: 250.00
    assert r.status_code == 403 and "needs the manager role" in r.text
    (pay,) = (await _stored(log, await till.post(sale(30_000, override=True), "manager"))).payments
    assert (pay.auth, pay.override_by) == ("deferred", "M007")
    assert await acquirer.records() == []  # an outage: nothing was authorised


async def test_a_slow_processor_is_no_answer_the_card_goes_deferred(
    till: Till, log: EventLog
) -> None:
    r = await till.post(sale(700, token="tok_slow_0001"))
    (pay,) = (await _stored(log, r)).payments
    assert pay.auth == "deferred"
