"""Issue 3, scenario 5: hostile or broken peers on the real NATS mesh of a running site.

A client holding till t2's credentials (stolen, or a buggy t2) publishes, on t2's own
subjects: a version vector claiming events t2 does not have, garbage, a 1 MiB garbage
frame, an oversized frame (refused by the client and server limit), a frame naming
another sender, events of another store, and a replay of one of t2's genuine frames.
Replication among the others goes on, nothing from those frames is applied, and every
incident shows in `GET /status` (sync.incidents) of the replicas that received it.

A till with its own credentials cannot publish on another till's subjects: the server
refuses, and a probe published afterwards on the same connection proves the forged
message never arrived (NATS keeps one publisher's order).

Issue 13, item 5: a till of s1, with its own credentials, sends HQ garbage pulls asking
for the reply on s2/t1's inbox, and pulls in other replicas' names. The server refuses
the latter; HQ refuses the former unread and blames s1/t1 alone, so s2's sales made
while cut off from HQ still reach HQ promptly after the heal.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.subjects import events_subject, pull_subject, pulls_to, vv_subject
from core.events import encode_event
from replicas.sync.config import HOSTILE_KINDS, SyncConfig
from replicas.sync.protocol import (
    EventsFrame,
    PullRequest,
    VersionVectorMsg,
    decode_message,
    encode_message,
)
from tests.e2e.faults import hq_cut_off, vv
from tests.e2e.harness import Mesh, running_mesh, wait_until
from tests.e2e.rogue import connect_as, forged_next_event_of
from tests.factories import cash_sale, chain

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"
VICTIMS = (T1, T3, HQ)


async def incidents(mesh: Mesh, rid: str, peer: str = T2) -> dict[str, int]:
    status = await mesh[rid].status(digest=False)
    return {i["kind"]: i["count"] for i in status["sync"]["incidents"] if i["peer"] == peer}


async def wait_incidents(mesh: Mesh, kind: str, above: dict[str, int] | None = None) -> None:
    """Until every victim reports more `kind` incidents from t2 than `above` says."""
    for rid in VICTIMS:
        floor = (above or {}).get(rid, 0)

        async def reported(rid: str = rid, floor: int = floor) -> bool:
            return (await incidents(mesh, rid)).get(kind, 0) > floor

        await wait_until(reported, f"{rid} to report a {kind} incident from {T2}", 20)


async def capture_a_genuine_frame(mesh: Mesh, evil: Client, origin: str = T2) -> bytes:
    frames: list[bytes] = []

    async def grab(msg: Msg) -> None:
        frames.append(msg.data)

    sub = await evil.subscribe(events_subject(origin), cb=grab)

    async def captured() -> bool:
        await mesh.sell(origin)  # also proves the subscription is live
        return bool(frames)

    await wait_until(captured, f"a genuine frame of {origin}", 20, every=0.2)
    await sub.unsubscribe()
    return frames[0]


async def test_hostile_frames_are_refused_and_reported(mesh: Mesh) -> None:
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()
    errors: list[Exception] = []
    evil = await connect_as(mesh, T2, T2, errors)  # at HQ, t2 speaks through its own leaf
    try:
        genuine = await capture_a_genuine_frame(mesh, evil)
        of_t1 = await capture_a_genuine_frame(mesh, evil, T1)
        await mesh.wait_converged()
        heads = mesh.oracle.heads()
        await attack(mesh, evil, heads, genuine, of_t1)
    finally:
        await evil.close()
    await mesh.sell_everywhere(mesh.tills, rounds=2)  # replication goes on
    statuses = await mesh.wait_converged()
    await mesh.check_on_disk(statuses)
    for rid, status in statuses.items():
        assert set(status["version_vector"]) == {T1, T2, T3}, rid  # no s2 events anywhere
        if rid in VICTIMS:
            kinds = {i["kind"] for i in status["sync"]["incidents"] if i["peer"] == T2}
            assert {"short", "bad_frame", "rejected", "duplicate_frame"} <= kinds, (rid, kinds)


async def attack(
    mesh: Mesh, evil: Client, heads: dict[str, int], genuine: bytes, of_t1: bytes
) -> None:
    ev, vv = events_subject(T2), vv_subject(T2)
    lie = VersionVectorMsg(T2, {T1: heads[T1] + 1000, T2: heads[T2] + 1000}, "s1")
    await evil.publish(vv, encode_message(lie))
    await wait_incidents(mesh, "short")  # they pulled the claimed events; t2 had none

    await evil.publish(ev, b"\xc1 not msgpack")
    await evil.publish(ev, os.urandom(1 << 20))
    with pytest.raises(nats.errors.MaxPayloadError):
        await evil.publish(ev, bytes(evil.max_payload + 1))
    await evil.publish(ev, encode_message(EventsFrame(T1, [], False, 0)))  # not its name
    await wait_incidents(mesh, "bad_frame")

    other_store = chain("s2/t1", [cash_sale(receipt="FORGED-S2")])
    await evil.publish(ev, encode_message(EventsFrame(T2, [encode_event(e) for e in other_store])))
    await wait_incidents(mesh, "rejected")

    before = {rid: (await incidents(mesh, rid)).get("duplicate_frame", 0) for rid in VICTIMS}
    sales = {rid: (await mesh[rid].status(digest=False))["sales"] for rid in VICTIMS}
    await evil.publish(ev, genuine)  # its own old frame again: harmless, like any echo
    frame = decode_message(of_t1, T1)
    assert isinstance(frame, EventsFrame)
    await evil.publish(ev, encode_message(EventsFrame(T2, frame.events)))  # t1's, as its own
    await wait_incidents(mesh, "duplicate_frame", before)
    for rid in VICTIMS:
        assert (await mesh[rid].status(digest=False))["sales"] == sales[rid], rid


# --- permissions ----------------------------------------------------------------------------


class Watcher:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def on_msg(self, msg: Msg) -> None:
        self.seen.append((msg.subject, msg.data))

    def count(self, subject: str, data: bytes) -> int:
        return self.seen.count((subject, data))


async def test_a_till_cannot_publish_as_another_till(mesh: Mesh) -> None:
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()
    head = mesh.oracle.heads()[T2]
    forged = encode_message(EventsFrame(T2, [forged_next_event_of(mesh, T2, head)]))
    errors: list[Exception] = []
    t1 = await connect_as(mesh, T1, T1, errors)
    watcher_nc = await connect_as(mesh, T3, T1, [])
    watcher = Watcher()
    try:
        for subject in ("tm.ev.s1.>", "tm.vv.s1.>"):
            await watcher_nc.subscribe(subject, cb=watcher.on_msg)
        await probe_seen(t1, watcher, 1, again=True)  # the watcher's interest is live
        forged_vv = encode_message(VersionVectorMsg(T2, {T2: 10**6}, "s1"))
        await t1.publish(events_subject(T2), forged)
        await t1.publish(vv_subject(T2), forged_vv)
        await t1.subscribe(pulls_to(T2))  # would steal t2's pull requests
        await probe_seen(t1, watcher, 2)
        # (the real t2 announces on its subject meanwhile: only the forged bytes count)
        assert not [s for s, data in watcher.seen if data in (forged, forged_vv)]
        await wait_until(violations(errors, 3), "permission violations reported", 10)
        reported = " ".join(str(e) for e in errors)
        for subject in (events_subject(T2), vv_subject(T2), pulls_to(T2)):
            assert f'"{subject}"' in reported, reported
    finally:
        await t1.close()
        await watcher_nc.close()
    for rid in mesh.procs:
        assert (await mesh[rid].status(digest=False))["version_vector"][T2] == head
    await mesh.sell_everywhere(mesh.tills, rounds=1)
    await mesh.converge_and_check()


async def probe_seen(nc: Client, watcher: Watcher, k: int, again: bool = False) -> None:
    """Publish probe `k` on t1's own vv subject (harmless: an origin at seq 0 raises no
    vector) until the watcher has seen it; `again`: republish while waiting."""
    subject = vv_subject(T1)
    probe = encode_message(VersionVectorMsg(T1, {f"s1/probe{k}": 0}, "s1"))
    await nc.publish(subject, probe)

    async def seen() -> bool:
        if watcher.count(subject, probe):
            return True
        if again:
            await nc.publish(subject, probe)
        return False

    await wait_until(seen, f"probe #{k}", 10, every=0.05)


def violations(errors: list[Exception], n: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return sum("permissions violation" in str(e).lower() for e in errors) >= n

    return check


# --- pull requests in another replica's name (issue 13, item 5) -----------------------------

S2 = "s2/t1"
FORGED = 16  # as many as in the issue, where they bought s2/t1 a 600 s backoff at HQ
# The issue's HQ still lacked s2's offline sales 30 s after the heal. Here ~5 s, most of
# it HQ's nats-server restarting and the leaf links coming back (with the requester
# taken from the reply inbox again, this test times out here).
PROMPT = 20.0


async def test_forged_pulls_do_not_slow_another_stores_sync(tmp_path: Path) -> None:
    async with running_mesh(tmp_path, {"s1": ["t1", "t2"], "s2": ["t1"]}) as mesh:
        await mesh.sell_everywhere(mesh.tills, rounds=1)
        await mesh.wait_converged()
        errors: list[Exception] = []
        evil = await connect_as(mesh, T1, T1, errors)  # s1/t1's own credentials
        try:
            await forge_pulls(mesh, evil, errors)
        finally:
            await evil.close()

        async with hq_cut_off(mesh) as cut:  # s2 (and s1) sell while HQ is unreachable
            await mesh.sell_everywhere(cut.sellers, rounds=2)
            await cut.check()
        healed = time.monotonic()
        head = mesh.oracle.heads()[S2]

        async def hq_has_s2() -> bool:
            return (await vv(mesh, HQ)).get(S2, 0) >= head

        await wait_until(hq_has_s2, "HQ to pull s2's sales made while cut off", PROMPT)
        print(f"\n  s2's offline sales at HQ {time.monotonic() - healed:.1f} s after the heal")
        status = (await mesh[HQ].status(digest=False))["sync"]
        assert await hostile(mesh, HQ, S2) == {}
        # A pull timing out while the links came back holds a peer off for retry_backoff
        # at most; a hostile incident's backoff starts at incident_backoff.
        assert status["peers"][S2]["backoff"] < SyncConfig().incident_backoff
        assert await hostile(mesh, HQ, T1) == {"forged_reply": FORGED}  # who sent them
        await mesh.converge_and_check()  # s1/t1's sales reached HQ through s1/t2


async def forge_pulls(mesh: Mesh, evil: Client, errors: list[Exception]) -> None:
    """Pulls in other names (refused by the server), then `FORGED` pulls in s1/t1's own
    name asking for the reply on s2/t1's inbox: garbage, and valid requests for all of
    HQ's events in s2/t1's name (served, they would spend HQ's budget for s2/t1)."""
    others = [pull_subject(HQ, S2), pull_subject(HQ, T2), pull_subject(S2, T1)]
    for subject in others:
        await evil.publish(subject, os.urandom(64), reply="_INBOX.s2.t1.x")
    lure = encode_message(PullRequest(S2, 1, [(HQ, 1, 10**6)], 10**6, 1 << 20))
    for i in range(FORGED):
        payload = os.urandom(64) if i % 2 else lure
        await evil.publish(pull_subject(HQ, T1), payload, reply=f"_INBOX.s2.t1.x{i}")
    await wait_until(violations(errors, len(others)), "the server to refuse the others", 10)
    reported = " ".join(str(e) for e in errors)
    for subject in others:
        assert f'"{subject}"' in reported, reported

    async def refused() -> bool:
        return (await incidents(mesh, HQ, T1)).get("forged_reply", 0) >= FORGED

    await wait_until(refused, f"HQ to refuse the {FORGED} forged pulls", 20)


async def hostile(mesh: Mesh, rid: str, peer: str) -> dict[str, int]:
    """The hostile incidents `rid` counts against `peer` (those that back it off)."""
    return {k: n for k, n in (await incidents(mesh, rid, peer)).items() if k in HOSTILE_KINDS}
