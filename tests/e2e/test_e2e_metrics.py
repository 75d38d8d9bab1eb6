"""`GET /metrics` on real till and HQ processes: Prometheus's own parser reads it, and
the counters and gauges move with the sales made (and only by them)."""

from __future__ import annotations

from pathlib import Path

from broker.subjects import HQ
from tests.e2e.harness import Mesh, running_mesh, wait_until

TILL = "s1/t1"
DEFERRED = 1234  # minor units, one card payment taken offline


def _sum(metrics: dict[str, float], prefix: str) -> float:
    """Every labelled sample of a family summed (e.g. ingested from every peer)."""
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


async def _linked(m: Mesh) -> None:
    """Until the link watchers (one look a second) have seen the till's leaf link."""

    async def seen() -> bool:
        till, hq = await m[TILL].metrics(), await m[HQ].metrics()
        up = 'tillmesh_uplink_up{uplink="wan"}', f'tillmesh_leaf_connected{{till="{TILL}"}}'
        return till[up[0]] == 1 and hq[up[1]] == 1

    await wait_until(seen, "the leaf link in the metrics", 20)


async def test_metrics_parse_and_move_with_sales(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, {"s1": ["t1", "t2"]}) as m:
        await m.wait_converged()
        await _linked(m)
        till0, hq0 = await m[TILL].metrics(), await m[HQ].metrics()
        await m.sell(TILL, 5)
        await m.sell_card(TILL, DEFERRED)
        await m.wait_converged()
        till1, hq1 = await m[TILL].metrics(), await m[HQ].metrics()

        # The till appended exactly its 6 sales, each in a timed commit.
        assert (
            till1["tillmesh_events_appended_total"] - till0["tillmesh_events_appended_total"] == 6
        )
        assert till1["tillmesh_commit_seconds_count"] > till0["tillmesh_commit_seconds_count"]
        assert till1["tillmesh_log_events"] == till0["tillmesh_log_events"] + 6 + _sum(
            till1, "tillmesh_events_ingested_total"
        ) - _sum(till0, "tillmesh_events_ingested_total")
        # HQ stored them once, from whichever peer served them.
        ingested = _sum(hq1, "tillmesh_events_ingested_total") - _sum(
            hq0, "tillmesh_events_ingested_total"
        )
        assert ingested == 6
        assert hq1["tillmesh_sales"] - hq0["tillmesh_sales"] == 6
        assert hq1["tillmesh_events_appended_total"] == hq0["tillmesh_events_appended_total"]
        # Deferred card exposure, from state, the same at the till and HQ.
        for metrics in (till1, hq1):
            assert metrics['tillmesh_deferred_card_exposure_minor{store="s1"}'] == DEFERRED
            assert metrics['tillmesh_deferred_card_payments{store="s1"}'] == 1
        # Sync state per peer: the till's backlog to HQ drained, HQ heard both tills.
        assert till1['tillmesh_sync_peer_backlog_events{peer="hq"}'] == 0
        assert till1["tillmesh_unsynced_to_hq_events"] == 0
        heard = {'tillmesh_sync_peer_last_seen_seconds{peer="s1/t1"}',
                 'tillmesh_sync_peer_last_seen_seconds{peer="s1/t2"}'}  # fmt: skip

        async def hq_heard_both() -> bool:  # t2 may not have spoken to HQ yet: it will
            return heard <= (await m[HQ].metrics()).keys()

        await wait_until(hq_heard_both, "HQ to hear from both tills", 20)
        assert till1['tillmesh_uplink_up{uplink="wan"}'] == 1
        assert hq1['tillmesh_leaf_connected{till="s1/t1"}'] == 1
        assert till1['tillmesh_replica_info{replica="s1/t1"}'] == 1


async def test_metrics_show_a_till_cut_from_hq(tmp_path: Path) -> None:
    """The link's state per uplink, and the backlog per peer, while a store is cut off."""
    async with running_mesh(tmp_path, {"s1": ["t1"]}) as m:
        await _linked(m)
        r = await m.client(TILL).put(f"{m[TILL].url}/link/hq", json={"enabled": False})
        assert r.status_code == 200, r.text

        async def cut() -> dict[str, float] | None:
            metrics = await m[TILL].metrics()
            return metrics if metrics['tillmesh_uplink_up{uplink="wan"}'] == 0 else None

        await wait_until(cut, "the till's uplink metric to drop", 20)
        await m.sell(TILL, 3)
        metrics = await m[TILL].metrics()
        assert metrics['tillmesh_sync_peer_backlog_events{peer="hq"}'] >= 3
        assert metrics["tillmesh_unsynced_to_hq_events"] >= 3
        assert metrics["tillmesh_online"] == 0
        assert metrics["tillmesh_uplink_changes_total"] >= 2  # linked, then cut

        async def hq_sees_link_down() -> bool:
            return (await m[HQ].metrics())['tillmesh_leaf_connected{till="s1/t1"}'] == 0

        await wait_until(hq_sees_link_down, "HQ to see the leaf link down", 20)
        r = await m.client(TILL).put(f"{m[TILL].url}/link/hq", json={"enabled": True})
        assert r.status_code == 200, r.text
        await m.wait_converged()
        metrics = await m[TILL].metrics()
        assert metrics['tillmesh_sync_peer_backlog_events{peer="hq"}'] == 0
