"""Issue 3, scenario 1: three tills and HQ as real processes replicate every sale.

Sales made on every till reach the other tills and HQ exactly once, all replicas
fold to the same state digest (API and `tillmesh state --digest`), every log passes
`tillmesh log verify`, and HQ's receipts bring every till's `unsynced_to_hq` to 0.
"""

from __future__ import annotations

from tests.e2e.harness import Mesh, wait_until


async def test_sales_on_every_till_reach_every_replica(mesh: Mesh) -> None:
    await mesh.sell_everywhere(mesh.tills, rounds=5, per_round=3)
    statuses = await mesh.wait_converged()
    assert set(statuses) == {"hq", "s1/t1", "s1/t2", "s1/t3"}
    assert mesh.oracle.heads() == {"s1/t1": 15, "s1/t2": 15, "s1/t3": 15}
    for rid, status in statuses.items():
        assert status["online"], f"{rid} not online"
        assert status["unsynced_to_hq"] == 0
        incidents = status["sync"]["incidents"]  # a healthy site: echoes are not incidents
        assert not [i for i in incidents if i["kind"] != "timeout"], (rid, incidents)
    hq_view = statuses["hq"]["sync"]["origins"]  # HQ's backlog per till: none, all heard
    for till in mesh.tills:
        assert hq_view[till]["held"] == 15 and hq_view[till]["behind"] == 0, hq_view[till]
        assert hq_view[till]["missing_for"] is None and hq_view[till]["last_seen"] is not None
    await mesh.check_on_disk(statuses)


async def test_receipts_count_down_to_zero_once_hq_holds_the_sales(mesh: Mesh) -> None:
    await mesh["hq"].freeze(tree=True)  # HQ holds nothing new while frozen
    try:
        (*_, last) = await mesh.sell(mesh.tills[0], 4)
        status = await mesh["s1/t1"].status(digest=False)
        assert status["unsynced_to_hq"] == 4
        sale = (await mesh.http.get(f"{mesh['s1/t1'].url}/sales/{last}")).json()
        assert sale["delivery"]["at_hq"] is False and "hq" not in sale["delivery"]["held_by"]
    finally:
        await mesh["hq"].thaw(tree=True)

    async def receipted() -> bool:
        return (await mesh["s1/t1"].status(digest=False))["unsynced_to_hq"] == 0

    await wait_until(receipted, "HQ's receipt for s1/t1's sales", 30)

    async def delivered() -> bool:  # the per-sale receipt: every peer, HQ included
        sale = (await mesh.http.get(f"{mesh['s1/t1'].url}/sales/{last}")).json()
        return sale["delivery"] == {"held_by": ["hq", *mesh.tills], "at_hq": True}

    await wait_until(delivered, f"{last} held everywhere", 30)
    await mesh.converge_and_check()
