"""Conflicts over the API: an oversell found by detection, resolved through the running log."""

from __future__ import annotations

from core.events import ProductUpserted
from tests.replicas.api_kit import FakeReplica, client_for, from_hq, open_log


async def test_oversell_is_listed_counted_and_resolved(tmp_path):
    log = await open_log(tmp_path / "till.db")
    try:
        await from_hq(log, ProductUpserted(sku="COLA", name="Cola", price=150))
        async with client_for(FakeReplica("s1/t1", log)) as client:
            sale = {
                "lines": [{"sku": "COLA", "qty": 2}],
                "payments": [{"method": "cash", "amount": 300}],
            }
            assert (await client.post("/sales", json=sale)).status_code == 201
            status = (await client.get("/status")).json()
            assert status["open_conflicts"] == 1
            (conflict,) = (await client.get("/conflicts", params={"open": True})).json()
            assert conflict["kind"] == "oversell" and conflict["subject"] == "COLA"
            assert conflict["store"] == "s1"

            decision = {"action": "compensate", "by": "manager ana", "reason": "found 2 in back"}
            url = f"/conflicts/{conflict['id']}/resolve"
            assert (await client.post(url, json=decision)).status_code == 201
            assert (await client.get("/status")).json()["open_conflicts"] == 0
            (after,) = (await client.get("/conflicts")).json()
            assert after["resolution"]["by"] == "manager ana"
            assert (await client.post("/conflicts/nope/resolve", json=decision)).status_code == 404
            light = (await client.get("/status", params={"conflicts": False})).json()
            assert light["open_conflicts"] is None
    finally:
        await log.close()


async def test_hq_refuses_to_compensate_a_stores_stock(tmp_path):
    till, hq = await open_log(tmp_path / "till.db"), await open_log(tmp_path / "hq.db", "hq")
    try:
        await from_hq(till, ProductUpserted(sku="COLA", name="Cola", price=150))
        async with client_for(FakeReplica("s1/t1", till)) as client:
            sale = {"lines": [{"sku": "COLA", "qty": 1}], "payments": [{"method": "cash",
                    "amount": 150}]}  # fmt: skip
            assert (await client.post("/sales", json=sale)).status_code == 201
        await hq.ingest_raw(await till.read_range("s1/t1", 1, 100), peer="s1/t1")
        async with client_for(FakeReplica("hq", hq)) as client:
            (conflict,) = (await client.get("/conflicts")).json()
            assert (conflict["kind"], conflict["store"]) == ("oversell", "s1")
            url = f"/conflicts/{conflict['id']}/resolve"
            decision = {"action": "compensate", "by": "hq ops", "reason": "saw it"}
            r = await client.post(url, json=decision)
            assert r.status_code == 409 and "resolve it on a till of store 's1'" in r.text
            decision["action"] = "accept"
            assert (await client.post(url, json=decision)).status_code == 201
    finally:
        await till.close()
        await hq.close()
