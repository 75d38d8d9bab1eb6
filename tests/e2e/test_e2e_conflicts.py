"""Issue 4 over real replication: business conflicts made on both sides of a real
partition (till t1's nats-server SIGSTOPped, so t1 is cut from t2, t3 and HQ) show up
on every replica with the same ids once it heals, and a manager's resolution made on
one till clears the conflict everywhere.

During the cut: both sides sell the last units of A (an oversell neither side sees
alone), void the same sale, refund the same sale, and use the same receipt number.
"""

from __future__ import annotations

from tests.e2e.conflict_kit import conflicts, post, sell
from tests.e2e.faults import store_split
from tests.e2e.harness import Mesh

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"
REPLICAS = (HQ, T1, T2, T3)
ONE_UNIT = {"line": 0, "qty": 1}
MADE_IN_THE_CUT = {"oversell", "double_void", "double_refund", "receipt_collision"}


async def test_conflicts_of_a_partition_agree_everywhere_and_resolve_everywhere(
    mesh: Mesh,
) -> None:
    await post(mesh, T2, "/stock/A/receive", {"qty": 2})
    await post(mesh, T2, "/stock/B/receive", {"qty": 10})
    to_void, to_refund = await sell(mesh, T2, "B", 1), await sell(mesh, T2, "B", 1)
    await mesh.wait_converged()
    assert not [c for c in (await conflicts(mesh, T1)).values() if c["kind"] in MADE_IN_THE_CUT]

    async with store_split(mesh) as cut:
        for side in (T1, T2):
            await sell(mesh, side, "A", 1)  # the two units of A, sold on each side
            await sell(mesh, side, "A", 1)
            await post(
                mesh, side, f"/sales/{to_refund}/refunds", {"lines": [{"line": 0, "qty": 1}]}
            )
            await sell(mesh, side, "B", 1, receipt="DUP-1")
        await post(mesh, T1, f"/sales/{to_void}/void")
        await post(mesh, T3, f"/sales/{to_void}/void")
        await cut.check()
        alone = {c["kind"] for c in (await conflicts(mesh, T1)).values()}
        assert not alone & MADE_IN_THE_CUT, f"t1 alone already sees {alone & MADE_IN_THE_CUT}"

    await mesh.wait_converged()
    seen = {rid: await conflicts(mesh, rid) for rid in REPLICAS}
    assert all(seen[rid] == seen[T1] for rid in REPLICAS), "replicas list different conflicts"
    by_kind = {c["kind"]: c for c in seen[T1].values()}
    assert set(by_kind) >= MADE_IN_THE_CUT
    assert (by_kind["oversell"]["subject"], by_kind["oversell"]["store"]) == ("A", "s1")

    double_void = by_kind["double_void"]["id"]
    decision = {"action": "accept", "by": "manager", "reason": "customer left with goods"}
    await post(mesh, T3, f"/conflicts/{double_void}/resolve", decision)
    await mesh.wait_converged()
    for rid in REPLICAS:
        assert double_void not in await conflicts(mesh, rid, open_only=True), rid
        kept = (await conflicts(mesh, rid))[double_void]["resolution"]
        assert kept is not None and kept["by"] == "manager", f"{rid}: {kept}"
