"""Issue 21: prices per store, over the API on real logs. A store manager's price at a
till of s1 is s1's override: s1's tills sell at it, s2's tills and HQ's chain price do
not move (before, `PUT /catalog/SKU-0011/price {"price":1}` at s1/t2 made HQ's catalog
show 0.01 while s2 sold at 9.76), and HQ's catalog view and price report show the chain
price and the override apart. A later chain price from HQ replaces the override."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conflict import queries
from conflict.state import StoreState
from core.clock import HybridClock
from core.events import HQ
from core.log import EventLog
from tests.replicas.api_kit import FakeReplica, client_for

NAMES = (HQ, "s1/t1", "s1/t2", "s2/t1")


class Wall:
    def __init__(self) -> None:
        self.ms = 1_800_000_000_000

    def __call__(self) -> int:
        return self.ms


async def _pull(dst: EventLog, src: EventLog) -> None:
    """`dst` takes what `src` holds of the origins a replica of its store holds."""
    mine = dst.replica_id.split("/")[0]
    for origin, seq in src.version_vector().items():
        if dst.replica_id != HQ and origin not in (HQ,) and origin.split("/")[0] != mine:
            continue  # a till holds its own store's events and HQ's only
        have = dst.version_vector().get(origin, 0)
        if seq > have:
            raws = await src.read_range(origin, have + 1, 1000)
            assert not (await dst.ingest_raw(raws, peer=src.replica_id)).rejected


async def _call(log: EventLog, method: str, url: str, body: Any = None) -> Any:
    async with client_for(FakeReplica(log.replica_id, log)) as client:
        r = await client.request(method, url, json=body)
        assert r.status_code in (200, 201), f"{method} {url} at {log.replica_id}: {r.text}"
        return r.json()


async def _sold_at(log: EventLog) -> int:
    sale = {"lines": [{"sku": "COLA", "qty": 1}], "payments": [{"method": "cash",
            "amount": 1000}]}  # fmt: skip
    out = await _call(log, "POST", "/sales", sale)
    return int(out["total"])


async def test_a_store_override_prices_that_stores_tills_only(tmp_path: Path) -> None:
    wall = Wall()
    logs = {
        n: await EventLog.open(
            tmp_path / f"{n.replace('/', '-')}.db",
            n,
            StoreState(),
            clock=HybridClock(wall),
            wall_ms=wall,
        )
        for n in NAMES
    }
    hq, s1t1, s1t2, s2t1 = (logs[n] for n in NAMES)

    async def sync() -> None:
        for _ in range(2):
            for a in logs.values():
                for b in logs.values():
                    if a is not b:
                        await _pull(a, b)

    try:
        await _call(hq, "PUT", "/catalog/COLA", {"name": "Cola", "price": 150})
        await sync()
        wall.ms += 60_000
        out = await _call(s1t2, "PUT", "/catalog/COLA/price", {"price": 99, "by": "mgr"})
        assert (out["product"]["price"], out["product"]["chain_price"]) == (99, 150)
        await sync()
        wall.ms += 60_000
        assert await _sold_at(s1t1) == 99  # the store's other till sells at the override
        assert await _sold_at(s1t2) == 99
        assert await _sold_at(s2t1) == 150  # another store: the chain price
        at_hq = await _call(hq, "GET", "/catalog/COLA")
        assert (at_hq["price"], at_hq["chain_price"], at_hq["overrides"]) == (150, 150, {"s1": 99})
        assert (await _call(s2t1, "GET", "/catalog/COLA"))["overrides"] == {}
        (row,) = await _call(hq, "GET", "/reports/prices")
        assert row == {"sku": "COLA", "name": "Cola", "chain_price": 150, "store": "s1",
                       "store_price": 99, "difference": -51, "set_by": "s1/t2:1"}  # fmt: skip

        await _call(hq, "PUT", "/catalog/COLA/price", {"price": 160})  # HQ reprices the chain
        await sync()
        wall.ms += 60_000
        assert [await _sold_at(t) for t in (s1t1, s2t1)] == [160, 160]
        assert await _call(hq, "GET", "/reports/prices") == []
        await sync()
        digests = {n: await log.read(queries.state_digest) for n, log in logs.items()}
        assert digests["s1/t1"] == digests["s1/t2"]  # one store, the same events
    finally:
        for log in logs.values():
            await log.close()
