"""A till rotates its key mid-run, with real processes (issue 14): it makes the new key
itself and sells on, HQ vouches for it, every replica converges to one digest with all
of the till's sales, and a thief holding the old key has what it writes past the
rotation refused everywhere."""

from __future__ import annotations

import asyncio
import sqlite3

from broker.subjects import events_subject
from core.events import encode_event
from core.signing import Ed25519Signer
from replicas.sync.protocol import EventsFrame, encode_message
from tests.e2e.harness import Mesh, wait_until
from tests.e2e.rogue import connect_as, forged_next, signing_key_of
from tests.factories import cash_sale

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"


def _quarantined(mesh: Mesh, rid: str, origin: str) -> set[int]:
    db = mesh.site.data_dir(mesh.root, rid) / "log.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seq FROM quarantine WHERE origin = ? AND kind = 'SignatureError'", (origin,)
        ).fetchall()
    finally:
        conn.close()
    return {s for (s,) in rows}


async def test_a_till_rotates_its_key_and_sells_on(mesh: Mesh) -> None:
    mesh.quarantine_allowed = True  # the thief's events are kept as evidence
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()
    old_key: Ed25519Signer = signing_key_of(mesh, T2)  # copied off t2's disk

    r = await mesh.client(T2).post(f"{mesh[T2].url}/keys/rotate")
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert rotated["from_seq"] == mesh.oracle.heads()[T2] + 1
    assert signing_key_of(mesh, T2).public_key != old_key.public_key  # on t2's disk now

    # t2 sells on with its new key before HQ vouches: held elsewhere, not lost
    await mesh.sell_everywhere(mesh.tills, rounds=1)
    hq = mesh["hq"]
    r = await mesh.client("hq").post(
        f"{hq.url}/keys/{T2}/rotate",
        json={"public_key": rotated["public_key"], "from_seq": rotated["from_seq"],
              "reason": "key file copied"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    await mesh.sell_everywhere(mesh.tills, rounds=1)
    statuses = await mesh.wait_converged()  # one digest per store, every acked sale
    await mesh.check_on_disk(statuses)

    # The thief writes t2's next event with the old key, on t2's subject
    stolen = forged_next(mesh, T2, cash_sale(price=1, receipt="STOLEN"), old_key)
    errors: list[Exception] = []
    evil = await connect_as(mesh, T2, T2, errors)
    try:
        frame = EventsFrame(T2, [encode_event(stolen)])
        await evil.publish(events_subject(T2), encode_message(frame))
    finally:
        await evil.close()

    async def refused_everywhere() -> bool:
        return all(stolen.seq in _quarantined(mesh, rid, T2) for rid in (T1, T3, HQ))

    await wait_until(refused_everywhere, "every replica to refuse the old key's event", 20)
    await asyncio.gather(mesh.sell(T2, 2), mesh.sell(T1, 1))  # t2's genuine next sales win
    statuses = await mesh.wait_converged()
    await mesh.check_on_disk(statuses)
