"""Issue 14's last probe over the API: a catalog write dated ten years ahead no longer
wins last-writer-wins for ever. HQ's clock was ten years ahead when it withdrew B2; its
machine was replaced and caught up its old events from a till (a clock does not follow
a timestamp that far ahead), so HQ's `PUT /catalog/B2 active=true` still answered
`active: false`. A `supersede` resolution naming that write makes HQ's write effective,
at HQ and at the till once it replicates; a till may not supersede HQ's writes."""

from __future__ import annotations

from pathlib import Path

from conflict.state import StoreState
from core.clock import HybridClock
from core.events import HQ, ProductUpserted
from core.log import EventLog
from replicas.api.tokens import Role, TokenStore
from tests.replicas.api_kit import FakeReplica, client_for, open_log, token_api

YEAR_MS = 365 * 86_400_000
NOW_MS = 1_800_000_000_000


async def _log(path: Path, replica: str, ahead_ms: int = 0) -> EventLog:
    def wall() -> int:
        return NOW_MS + ahead_ms

    return await EventLog.open(path, replica, StoreState(), clock=HybridClock(wall), wall_ms=wall)


async def _pull(dst: EventLog, src: EventLog, origin: str) -> None:
    have = dst.version_vector().get(origin, 0)
    result = await dst.ingest_raw(await src.read_range(origin, have + 1, 1000), peer=src.replica_id)
    assert not result.rejected, result.rejected[:1]


async def test_a_supersede_makes_hqs_later_write_effective_everywhere(tmp_path: Path) -> None:
    skewed = await _log(tmp_path / "old-hq.db", HQ, ahead_ms=10 * YEAR_MS)
    till = await _log(tmp_path / "till.db", "s1/t1")
    hq = await _log(tmp_path / "hq.db", HQ)
    try:
        await skewed.append(ProductUpserted(sku="B2", name="Bread", price=300))
        withdrawn = await skewed.append(
            ProductUpserted(sku="B2", name="Bread", price=300, active=False)
        )
        await _pull(till, skewed, HQ)
        await _pull(hq, till, HQ)  # the replacement HQ catches up its own old events
        async with client_for(FakeReplica(HQ, hq)) as client:
            put = {"name": "Bread", "price": 300, "active": True}
            r = await client.put("/catalog/B2", json=put)
            assert r.status_code == 200, r.text
            assert r.json()["product"]["active"] is False  # the write dated 2036 still wins

            url = "/conflicts/catalog:B2/resolve"
            decision = {"action": "supersede", "supersedes": [withdrawn.id], "by": "ana",
                        "reason": "dated ten years ahead by HQ's old clock"}  # fmt: skip
            r = await client.post(url, json=decision)
            assert r.status_code == 201, r.text
            assert (await client.get("/catalog/B2")).json()["active"] is True
            again = await client.post(url, json=decision)
            assert again.status_code == 409 and "already superseded" in again.text
            (listed,) = [c for c in (await client.get("/conflicts")).json()
                         if c["kind"] == "catalog_override"]  # fmt: skip
            assert listed["events"] == [withdrawn.id]
            assert listed["resolution"]["by"] == "ana"
        await _pull(till, hq, HQ)
        async with client_for(FakeReplica("s1/t1", till)) as client:
            assert (await client.get("/catalog/B2")).json()["active"] is True
    finally:
        for log in (skewed, till, hq):
            await log.close()


async def test_a_till_may_not_supersede_hqs_catalog(tmp_path: Path) -> None:
    hq, till = await open_log(tmp_path / "hq.db", HQ), await open_log(tmp_path / "till.db")
    try:
        written = await hq.append(ProductUpserted(sku="B2", name="Bread", price=300))
        await _pull(till, hq, HQ)
        async with client_for(FakeReplica("s1/t1", till)) as client:
            decision = {"action": "supersede", "supersedes": [written.id], "by": "ana",
                        "reason": "x"}  # fmt: skip
            r = await client.post("/conflicts/catalog:B2/resolve", json=decision)
            assert r.status_code == 409 and "may not supersede" in r.text
            decision["action"] = "accept"
            r = await client.post("/conflicts/catalog:B2/resolve", json=decision)
            assert r.status_code == 409 and "only it does" in r.text
            r = await client.post("/conflicts/catalog:B2/resolve", json={
                "action": "supersede", "supersedes": ["s1/t1:99"], "by": "ana"})  # fmt: skip
            assert r.status_code == 409 and "not a catalog write of B2" in r.text
    finally:
        await hq.close()
        await till.close()


async def test_at_hq_a_catalog_override_needs_the_hq_admin_role(tmp_path: Path) -> None:
    hq = await open_log(tmp_path / "hq.db", HQ)
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {role.name: store.issue(f"{role.name} device", role.name) for role in Role}
    try:
        written = await hq.append(ProductUpserted(sku="B2", name="Bread", price=300))
        async with token_api(hq, store, tokens, HQ) as api:
            decision = {"action": "supersede", "supersedes": [written.id], "by": "ana",
                        "reason": "x"}  # fmt: skip
            url = "/conflicts/catalog:B2/resolve"
            r = await api.call("manager", "POST", url, decision)
            assert r.status_code == 403 and "hq_admin" in r.text
            assert (await api.call("hq_admin", "POST", url, decision)).status_code == 201
    finally:
        await hq.close()
