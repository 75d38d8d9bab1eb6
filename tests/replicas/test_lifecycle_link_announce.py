"""A till announces its vector as soon as its link to HQ comes back, so HQ pulls what
it missed at once, not at the next periodic announcement (issue 16: a restarted HQ
waited 2.6-4.9 s for it in the PostgreSQL bench's 7 s catch-up)."""

from __future__ import annotations

import asyncio

import httpx

from broker.subjects import HQ
from replicas.sync.config import SyncConfig
from tests.e2e.harness import wait_until
from tests.replicas.lifecycle_kit import TILL, InProcess

# No periodic announcement within the test: only a prompt one can tell HQ.
SILENT = SyncConfig(announce_interval=600)
SALE = {"lines": [{"sku": "COLA", "qty": 1, "unit_price": 150}], "payments": [
    {"method": "cash", "amount": 150}]}  # fmt: skip


async def test_a_till_announces_when_its_hq_link_comes_back(in_process: InProcess) -> None:
    hq = await in_process.start(HQ, SILENT)
    till = await in_process.start(TILL, SILENT)
    await asyncio.wait_for(till.ready.wait(), 30)

    async def link_is(up: bool) -> bool:
        return till.uplink.connected == up

    await wait_until(lambda: link_is(True), f"{TILL}'s link to HQ up", 30)
    assert await till.set_hq_link(False)
    await wait_until(lambda: link_is(False), f"{TILL} to see its link down", 30)
    async with httpx.AsyncClient(base_url=in_process.site.api_url(TILL), timeout=10) as http:
        r = await http.post("/sales", json=SALE)  # pushed live into a link that is down
        assert r.status_code == 201, r.text
    sold = till.log.version_vector()[TILL]
    assert hq.log.version_vector().get(TILL, 0) < sold  # HQ missed it

    assert await till.set_hq_link(True)

    async def hq_has_it() -> bool:
        return hq.log.version_vector().get(TILL, 0) >= sold

    await wait_until(
        hq_has_it, f"HQ to pull {TILL}'s sale well before {SILENT.announce_interval} s", 20
    )
