"""Issue 21 over real processes: two managers resolve the same oversell on two sides of
a real partition (till t1's nats-server SIGSTOPped: t1 is cut from t2, t3 and HQ). Each
compensates from what its own till sees, so each side's stock is back to zero alone.
After the heal one resolution is effective at every replica (the earliest), the other
is listed as superseded with who and what it would have done, and the stock was
corrected once: before issue 21 both compensations applied and the store showed +2.
"""

from __future__ import annotations

from typing import Any

from tests.e2e.conflict_kit import conflicts, post, sell
from tests.e2e.faults import store_split
from tests.e2e.harness import Mesh

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"
REPLICAS = (HQ, T1, T2, T3)


async def on_hand(mesh: Mesh, rid: str, sku: str) -> int:
    r = await mesh.http.get(f"{mesh[rid].url}/stock/{sku}", params={"store": "s1"})
    assert r.status_code == 200, r.text
    return int(r.json()["on_hand"])


async def test_one_oversell_resolved_on_both_sides_of_a_cut_corrects_stock_once(
    mesh: Mesh,
) -> None:
    await post(mesh, T2, "/stock/A/receive", {"qty": 1})
    for _ in range(3):
        await sell(mesh, T2, "A", 1)
    await mesh.wait_converged()
    (over,) = [c for c in (await conflicts(mesh, T1, open_only=True)).values()
               if c["kind"] == "oversell"]  # fmt: skip
    assert over["id"] in await conflicts(mesh, T2, open_only=True)
    url = f"/conflicts/{over['id']}/resolve"

    async with store_split(mesh) as cut:
        await sell(mesh, T1, "B", 1)  # (the cut's own check wants both sides to write)
        for side, who in ((T1, "ana"), (T2, "ben")):
            await post(mesh, side, url, {"action": "compensate", "by": who, "reason": "found 2"})
            assert await on_hand(mesh, side, "A") == 0, side  # each side alone: fixed once
            mine = (await conflicts(mesh, side))[over["id"]]["resolution"]
            assert mine["by"] == who and mine["effect"] == "A+2@s1", mine
        await cut.check()

    await mesh.wait_converged()
    seen: dict[str, Any] = {rid: (await conflicts(mesh, rid))[over["id"]] for rid in REPLICAS}
    effective = seen[HQ]["resolution"]
    assert all(seen[rid]["resolution"] == effective for rid in REPLICAS), seen
    (later,) = seen[HQ]["superseded"]
    assert {effective["by"], later["by"]} == {"ana", "ben"}
    assert later["effect"] == "A+2@s1" and later["hlc"] > effective["hlc"]
    for rid in REPLICAS:
        assert seen[rid]["superseded"] == seen[HQ]["superseded"], rid
        assert await on_hand(mesh, rid, "A") == 0, rid  # corrected once, not +2
