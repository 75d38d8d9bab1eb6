"""A real store network on one machine: 2 stores x 3 tills and 3 HQ hub nodes, each a
real `tillmesh` process on an emulated machine of its own (network namespace, own
address, standard ports, its own identity from the site CA), stores on LANs of their own
reaching HQ over a WAN and an LTE uplink (HQ has an address per uplink). Links are cut
for real (`ip link set ... down`), with sales going on during each cut; after each heal
no acknowledged sale is missing anywhere, none is twice, one digest per store everywhere.
A store LAN is split in two (its switch fails) as well as cut. The time each heal took
to converge, and the time a store's links took to move to LTE, are printed. A tap on
the LTE link to HQ's first node records what an eavesdropper sees.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from replicas.demo.netlab.network import Network
from tests.e2e.harness import Mesh, wait_until
from tests.e2e.lan import LanSite, lan_site

STORES = {"s1": ["t1", "t2", "t3"], "s2": ["t1", "t2", "t3"]}
CARD = {"card_token": "tok_eavesdrop_canary_7781", "card_last4": "4929"}


async def _heal_and_check(mesh: Mesh, what: str) -> None:
    started = time.monotonic()
    statuses = await mesh.wait_converged(timeout=90)
    print(f"\n  {what}: converged {time.monotonic() - started:.1f} s after the heal")
    await mesh.check_on_disk(statuses)


async def _uplinks(mesh: Mesh, tills: list[str]) -> dict[str, dict[str, Any]]:
    return {rid: (await mesh[rid].status(digest=False))["sync"]["uplink"] for rid in tills}


async def _wait_links(
    mesh: Mesh, tills: list[str], ok: Callable[[dict[str, Any]], bool], what: str
) -> float:
    """Seconds until every till in `tills` reports a connected leaf link that is `ok`."""
    started, seen = time.monotonic(), {}

    async def all_ok() -> bool:
        seen.update(await _uplinks(mesh, tills))
        return all(link["connected"] and ok(link) for link in seen.values())

    try:
        await wait_until(all_ok, what, 30)
    except AssertionError as e:
        raise AssertionError(f"{e}; links: {seen}") from None
    return time.monotonic() - started


async def _wait_uplink(mesh: Mesh, tills: list[str], uplink: str, what: str) -> float:
    return await _wait_links(mesh, tills, lambda link: link["uplink"] == uplink, what)


async def _wait_moved(mesh: Mesh, tills: list[str], lost: str) -> float:
    what = f"the leaf links through {lost} to move"
    return await _wait_links(mesh, tills, lambda link: link["hub"] != lost, what)


async def _card_sale(mesh: Mesh, rid: str) -> str:
    body = {
        "lines": [{"sku": "SKU-CARD", "qty": 1, "unit_price": 1250}],
        "payments": [{"method": "card", "amount": 1250, **CARD}],
    }
    r = await mesh.client(rid).post(f"{mesh[rid].url}/sales", json=body)
    assert r.status_code == 201, r.text
    out = r.json()
    mesh.oracle.record(out["sale_id"], out["receipt"], out["total"])
    return str(out["sale_id"])


def _clear_text_leaks(site: LanSite, markers: list[str]) -> list[str]:
    assert site.tap_file is not None
    seen = site.tap_file.read_bytes()
    return [m for m in markers if m.encode() in seen]


async def test_a_site_on_its_own_machines_sells_through_cuts_and_converges(
    netns: Network, tmp_path: Path
) -> None:
    site = lan_site(netns, tmp_path, STORES, hq_nodes=3, tap=True)
    s1_tills = [f"s1/{t}" for t in STORES["s1"]]
    async with site.mesh() as mesh:
        everyone = mesh.tills
        await mesh.sell_everywhere(everyone, rounds=2)
        await _heal_and_check(mesh, "start")
        await _wait_uplink(mesh, everyone, "wan", "every till's leaf link up over the WAN")
        hubs = {rid: link["hub"] for rid, link in (await _uplinks(mesh, everyone)).items()}
        print(f"\n  leaf links by hub node: {hubs}")  # spread, as far as start-up order allowed

        site.host("s1/t2").cut()  # a till's cable pulled: it sells alone
        await mesh.sell_everywhere(everyone, rounds=2)
        site.host("s1/t2").restore()
        await _heal_and_check(mesh, "till cable back")

        s1 = netns.stores["s1"]
        s1.cut("wan")  # the store's WAN fails: its leaf links move to HQ over LTE
        took = await _wait_uplink(mesh, s1_tills, "lte", "s1's links to move to LTE")
        print(f"\n  WAN cut: every s1 till on LTE {took:.1f} s later")
        sold = await mesh.sell(mesh.tills[0], 3) + [await _card_sale(mesh, "s1/t1")]
        await mesh.sell_everywhere(everyone, rounds=1)
        await _heal_and_check(mesh, "over LTE (WAN still down)")
        assert site.tap_file is not None and site.tap_file.stat().st_size > 4096  # it carried
        assert _clear_text_leaks(site, [*sold, *CARD.values(), "tm.ev.", "s1.t1"]) == []

        s1.restore("wan")  # no fail-back by itself; switching the link off and on is one
        r = await mesh.client("s1/t1").put(f"{mesh['s1/t1'].url}/link/hq", json={"enabled": False})
        assert r.status_code == 200, r.text
        r = await mesh.client("s1/t1").put(f"{mesh['s1/t1'].url}/link/hq", json={"enabled": True})
        await _wait_uplink(mesh, ["s1/t1"], "wan", "s1/t1 back on the WAN")

        s1.cut()  # WAN and LTE: store 1 alone, it sells on
        await mesh.sell_everywhere(everyone, rounds=2)
        s1.restore()
        await _heal_and_check(mesh, "store 1 back online")

        lost = max(("hq2", "hq3"), key=list(hubs.values()).count)  # not the HQ replica's
        site.machine(lost).cut()  # an HQ machine lost: its stores' links move on
        moved = [rid for rid, hub in hubs.items() if hub == lost]
        await mesh.sell_everywhere(everyone, rounds=2)
        await _heal_and_check(mesh, f"{lost} down ({len(moved)} leaf links moving)")
        took = await _wait_moved(mesh, moved, lost)  # HQ had their events through peers
        print(f"  the {len(moved)} leaf links through {lost} on other hub nodes {took:.1f} s later")
        site.machine(lost).restore()

        netns.split("s2", ["s2-t2", "s2-t3"])  # store 2's switch fails: t1 + router | t2, t3
        await mesh.sell_everywhere(everyone, rounds=2)
        netns.join("s2")
        await _heal_and_check(mesh, "store 2 LAN joined again")
