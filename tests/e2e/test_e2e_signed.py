"""Signed events with real processes (issue 14): a client holding till s1/t2's key and
NATS credentials publishes, on t2's own subject, events in s1/t1's name, a price change
in HQ's name, and an equivocating copy of one of t2's own events. No replica applies the
forged ones, each is quarantined as evidence naming t2, the equivocation is recorded,
and honest sales meanwhile all succeed and replicate."""

from __future__ import annotations

import asyncio
import sqlite3

from broker.subjects import events_subject
from core.events import PriceSet, encode_event
from replicas.sync.protocol import EventsFrame, encode_message
from tests.e2e.harness import Mesh, run_cli, wait_until
from tests.e2e.rogue import connect_as, forged_next, signing_key_of
from tests.factories import cash_sale

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"
VICTIMS = (T1, T3, HQ)


def quarantined(mesh: Mesh, rid: str) -> list[tuple[str, str, int, str]]:
    """(peer, origin, seq, kind) of what `rid`'s log refused and kept as evidence."""
    db = mesh.site.data_dir(mesh.root, rid) / "log.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT peer, origin, seq, kind FROM quarantine").fetchall()
    finally:
        conn.close()
    return [tuple(r) for r in rows]


async def test_events_not_signed_by_their_origin_are_refused_everywhere(mesh: Mesh) -> None:
    mesh.quarantine_allowed = True  # the forged events are kept as evidence
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()
    key = signing_key_of(mesh, T2)  # t2's disk, stolen
    t2_head = mesh.oracle.heads()[T2]
    forged = [
        forged_next(mesh, T1, cash_sale(price=1, receipt="FORGED-T1"), key),
        forged_next(mesh, HQ, PriceSet(sku="SKU-1", price=1), key),
        forged_next(mesh, T2, cash_sale(price=1, receipt="TWIN"), key, at=t2_head),
    ]
    errors: list[Exception] = []
    evil = await connect_as(mesh, T2, T2, errors)
    try:
        honest = asyncio.create_task(mesh.sell_everywhere(mesh.tills, rounds=3))
        for ev in forged:  # on t2's own subject: permissions let it, signatures must not
            frame = EventsFrame(T2, [encode_event(ev)])
            await evil.publish(events_subject(T2), encode_message(frame))
        await honest  # every honest sale was acknowledged meanwhile
    finally:
        await evil.close()

    async def all_refused() -> bool:
        return all(
            {(T1, "SignatureError"), (HQ, "SignatureError"), (T2, "Equivocation")}
            <= {(origin, kind) for peer, origin, _, kind in quarantined(mesh, rid) if peer == T2}
            for rid in VICTIMS
        )

    await wait_until(all_refused, "every victim to quarantine the forged events from t2", 20)
    statuses = await mesh.wait_converged()
    await mesh.check_on_disk(statuses)  # exactly the acknowledged sales: no FORGED-T1
    for rid in VICTIMS:  # flagged where ops look: status, and the conflicts listing
        r = await mesh.client(rid).get(f"{mesh[rid].url}/status", params={"digest": False})
        kept = r.json()["evidence"]
        assert kept["SignatureError"] >= 2 and kept["Equivocation"] >= 1, (rid, kept)
    listing = await run_cli("conflicts", str(mesh.site.data_dir(mesh.root, T1) / "log.db"))
    assert f"equivocation  {T2}:{t2_head}  two versions signed by {T2}" in listing, listing
    for rid in (*VICTIMS, T2):
        r = await mesh.client(rid).get(f"{mesh[rid].url}/catalog/SKU-1")
        assert r.status_code == 404 or r.json().get("price") != 1, (rid, r.text)
        vv = statuses[rid]["version_vector"]
        assert HQ not in vv or vv[HQ] == 0, (rid, vv)  # HQ never wrote; nothing in its name
