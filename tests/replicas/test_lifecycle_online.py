"""Switching a till's HQ link off takes it offline at once: a card sale right after is
deferred, not claimed as authorised online on the strength of HQ's last announcement,
and the card processor (reached over the same link) is not asked."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from broker.subjects import HQ
from replicas.payments.service import KEY_FILE
from replicas.sync.config import SyncConfig
from tests.acquirer_kit import AcquirerProc
from tests.e2e.harness import wait_until
from tests.replicas.lifecycle_kit import TILL, InProcess

FAST = SyncConfig(announce_interval=0.5)  # HQ heard twice a second, so "online" comes fast
CARD = {"method": "card", "amount": 150, "card_token": "tok_test_0001", "card_last4": "1111"}
CARD_SALE = {"lines": [{"sku": "COLA", "qty": 1, "unit_price": 150}], "payments": [CARD]}


async def _card_auth(http: httpx.AsyncClient) -> str:
    r = await http.post("/sales", json=CARD_SALE)
    assert r.status_code == 201, r.text
    sale = (await http.get(f"/sales/{r.json()['sale_id']}")).json()
    auth: str = sale["payments"][0]["auth"]
    return auth


async def _online(http: httpx.AsyncClient) -> bool:
    status: dict[str, Any] = (await http.get("/status", params={"digest": False})).json()
    return bool(status["online"])


async def test_switching_the_hq_link_off_is_offline_at_once(
    in_process: InProcess, acquirer: AcquirerProc
) -> None:
    in_process.site = in_process.site.model_copy(
        update={"acquirer_url": acquirer.url, "acquirer_key_file": str(acquirer.data / KEY_FILE)}
    )
    await in_process.start(HQ, FAST)
    till = await in_process.start(TILL, FAST)
    await asyncio.wait_for(till.ready.wait(), 30)  # its API listens
    url = in_process.site.api_url(TILL)
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        await wait_until(lambda: _online(http), f"{TILL} online (HQ heard)", 30)
        assert await _card_auth(http) == "online"

        r = await http.put("/link/hq", json={"enabled": False})
        assert r.status_code == 200 and r.json() == {"enabled": False}
        assert not await _online(http)  # not 15 s later: now
        assert await _card_auth(http) == "deferred"
        assert len(await acquirer.records()) == 1  # the first sale's authorisation only

        # Called here rather than over HTTP: no announcement can slip in between.
        assert await till.set_hq_link(True)
        assert not till.online()  # HQ's last word predates the link: not yet
        await wait_until(lambda: _online(http), "online again once HQ is heard anew", 30)
