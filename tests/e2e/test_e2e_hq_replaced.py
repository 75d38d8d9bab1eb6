"""A replacement HQ on an empty log (back-office PC replaced, disk lost) must not number
its events from hq:1 again: every till already holds hq:1..N from the old HQ, and new
events under those numbers would break the hash chain at every till (quarantined), so
HQ's catalog would never reach a till again.

Started without `--fresh`, HQ keeps its API closed until it has heard one till of every
store, and catches up its own old events first; its next catalog write is hq:N+1 and
replicates. Two stores of one till each, so the test also shows that one store heard
is not enough.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Mesh, running_mesh, wait_until

HQ, T1, X1 = "hq", "s1/t1", "s2/x1"
HOLD = 3.0  # seconds HQ is watched not serving while store s2 stays silent


@pytest.fixture
async def two_stores(tmp_path: Path) -> AsyncIterator[Mesh]:
    async with running_mesh(tmp_path, {"s1": ["t1"], "s2": ["x1"]}) as m:
        yield m


async def _answers(mesh: Mesh, rid: str) -> bool:
    try:
        await mesh.http.get(f"{mesh[rid].url}/healthz", timeout=1.0)
    except httpx.TransportError:
        return False
    return True


async def _put_product(mesh: Mesh, sku: str, price: int) -> str:
    r = await mesh.http.put(
        f"{mesh[HQ].url}/catalog/{sku}", json={"name": f"Product {sku}", "price": price}
    )
    r.raise_for_status()
    return str(r.json()["event_id"])


async def test_replacement_hq_waits_for_every_store_and_continues_hq_seq(
    two_stores: Mesh, tmp_path: Path
) -> None:
    mesh, hq = two_stores, two_stores[HQ]
    assert await _put_product(mesh, "OLD", 100) == "hq:1"
    await mesh.wait_converged()

    assert not hq.stop()
    hq.lose_disk(keep=tmp_path / "old-hq")  # the old back-office PC's disk is gone

    await mesh[X1].freeze()  # store s2 silent: s1 alone must not be enough
    try:
        hq.spawn(fresh=False)
        await asyncio.sleep(HOLD)
        assert hq.running, hq.tail()
        assert not await _answers(mesh, HQ), "HQ served before every store was heard"
    finally:
        await mesh[X1].thaw()
    await hq.wait_serving()
    assert "confirm our history" in hq.tail(200)

    status = await hq.status(digest=False)
    assert status["version_vector"].get(HQ, 0) >= 1, "served before its history was back"
    assert await _put_product(mesh, "NEW", 250) == "hq:2"

    async def tills_have_new() -> bool:
        for rid in (T1, X1):
            r = await mesh.http.get(f"{mesh[rid].url}/catalog/NEW")
            if r.status_code != 200:
                return False
        return True

    await wait_until(tills_have_new, "HQ's new product at every till", 30)
    for rid in (T1, X1):
        assert (await mesh[rid].status(digest=False))["quarantined"] == 0
    await mesh.converge_and_check()
