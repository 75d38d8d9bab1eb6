"""Card payments with the processor as a real process and a store of real till processes
(issue 17): online approval and decline; cut off from the processor (and HQ), the
store takes cards under HQ's floor limits and refuses above; partitioned tills sell
alone; on reconnect both tills forward the same queue and one is SIGKILLed mid-forward,
yet every deferred payment is captured or declined exactly once at the processor, and
the declines are conflicts at every replica of the store and at HQ, resolved once."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.subjects import HQ
from replicas.payments.reversals import FILE as REVERSALS_FILE
from replicas.payments.service import KEY_FILE
from replicas.site import save_site
from tests.acquirer_kit import AcquirerProc
from tests.e2e.harness import Mesh, signal_and_wait, wait_until
from tests.pan_scan import scan_for_pans

T1, T2 = "s1/t1", "s1/t2"
LIMITS = {"per_payment": 50_000, "till_total": 400_000, "till_count": 20, "max_age_s": 3600}


def card_sale(amount: int, token: str) -> dict[str, Any]:
    return {"lines": [{"sku": "MISC", "qty": 1, "unit_price": amount}],
            "payments": [{"method": "card", "amount": amount, "card_token": token,
                          "card_last4": "4242"}]}  # fmt: skip


@pytest.fixture
async def store(tmp_path: Path, acquirer: AcquirerProc) -> AsyncIterator[Mesh]:
    mesh = Mesh(tmp_path, {"s1": ["t1", "t2"]})
    mesh.site = mesh.site.model_copy(
        update={
            "acquirer_url": acquirer.url,
            "card_forward_every_s": 0.3,
            "acquirer_key_file": str(acquirer.data / KEY_FILE),
        }
    )
    save_site(mesh.root, mesh.site)
    try:
        await mesh.start()
        yield mesh
    finally:
        assert not await mesh.close()


async def _post(mesh: Mesh, rid: str, path: str, body: Any, method: str = "POST") -> Any:
    r = await mesh.client(rid).request(method, f"{mesh.site.api_url(rid)}{path}", json=body)
    if path == "/sales" and r.status_code == 201:  # the oracle `wait_converged` checks
        mesh.oracle.record(r.json()["sale_id"], r.json()["receipt"], r.json()["total"])
    return r


async def _get(mesh: Mesh, rid: str, path: str) -> Any:
    r = await mesh.client(rid).get(f"{mesh.site.api_url(rid)}{path}")
    r.raise_for_status()
    return r.json()


async def _set_link(mesh: Mesh, rid: str, enabled: bool) -> None:
    r = await _post(mesh, rid, "/link/hq", {"enabled": enabled}, "PUT")
    assert r.status_code == 200, r.text


async def _settled(mesh: Mesh, rid: str, n: int) -> bool:
    """`rid`'s state holds `n` deferred card payments and none outstanding."""
    rows = await _get(mesh, rid, "/reports/payments")
    deferred = sum(r["payments"] for r in rows if r["auth"] == "deferred")
    outstanding = sum(r["payments"] for r in rows if r["settlement"] == "outstanding")
    return deferred == n and outstanding == 0


async def test_offline_cards_are_forwarded_once_and_declines_land(
    store: Mesh, acquirer: AcquirerProc, tmp_path: Path
) -> None:
    mesh = store
    r = await _post(mesh, HQ, "/cards/limits", {**LIMITS, "store": "s1"}, "PUT")
    assert r.status_code == 201, r.text

    async def limits_at_tills() -> bool:
        seen = [(await _get(mesh, t, "/cards/limits"))["per_payment"] for t in (T1, T2)]
        return seen == [50_000, 50_000]

    await wait_until(limits_at_tills, "HQ's limits at both tills")

    # Online: the processor answers before the till does.
    ok = await _post(mesh, T1, "/sales", card_sale(1_000, "tok_online_001"))
    assert ok.status_code == 201 and ok.json()["payments"][0]["auth"] == "online", ok.text
    no = await _post(mesh, T1, "/sales", card_sale(1_000, "tok_decline_online"))
    assert no.status_code == 402, no.text

    # The store loses its link (HQ and the processor), and its tills each other.
    for till in (T1, T2):
        await _set_link(mesh, till, False)
    frozen = mesh[T2].nats_servers()
    for p in frozen:
        await signal_and_wait(p.pid, signal.SIGSTOP)
    deferred: list[str] = []
    for i in range(6):
        for till in (T1, T2):
            token = f"tok_{'decline' if i % 3 == 0 else 'offline'}_{till[-1]}{i:03d}"
            r = await _post(mesh, till, "/sales", card_sale(2_000 + i, token))
            assert r.status_code == 201 and r.json()["payments"][0]["auth"] == "deferred", r.text
            deferred.append(f"{r.json()['sale_id']}#0")
    big = await _post(mesh, T1, "/sales", card_sale(14_590_000, "tok_big_000001"))
    assert big.status_code == 409 and "over the offline floor limit" in big.text, big.text
    for p in frozen:
        await signal_and_wait(p.pid, signal.SIGCONT)

    async def both_hold_all() -> bool:
        held = [sum(r["payments"] for r in await _get(mesh, t, "/reports/exposure"))
                for t in (T1, T2)]  # fmt: skip
        return held == [12, 12]

    await wait_until(both_hold_all, "both tills hold the store's 12 offline payments", 60)

    # Back online: both forward the same queue; t2 dies as soon as forwarding has begun.
    for till in (T1, T2):
        await _set_link(mesh, till, True)

    async def capturing() -> bool:
        return any(r["kind"] == "capture" for r in await acquirer.records())

    await wait_until(capturing, "the first capture", 30, every=0.01)
    mesh[T2].kill(signal.SIGKILL)
    await wait_until(lambda: _settled(mesh, T1, 12), "t1 settles every offline payment", 60)
    mesh[T2].stop()
    mesh[T2].spawn(fresh=False)
    await mesh[T2].wait_serving()
    for rid in (T2, HQ):
        await wait_until(lambda rid=rid: _settled(mesh, rid, 12), f"{rid} settled", 60)

    # Processor side: one record per payment id, whoever asked and however often.
    captures = {r["key"]: r for r in await acquirer.records() if r["kind"] == "capture"}
    assert sorted(captures) == sorted(deferred)
    declined = sorted(k for k, r in captures.items() if r["status"] == "declined")
    assert len(declined) == 4  # tokens i = 0, 3 at both tills

    # Declines are conflicts at every replica of the store and at HQ, with one id each.
    async def conflicts_at(rid: str) -> dict[str, str]:
        found = await _get(mesh, rid, "/conflicts")
        return {c["subject"]: c["id"] for c in found if c["kind"] == "card_declined"}

    at = {rid: await conflicts_at(rid) for rid in (T1, T2, HQ)}
    assert sorted(at[T1]) == declined and at[T1] == at[T2] == at[HQ]
    first = at[T1][declined[0]]
    r = await _post(mesh, T1, f"/conflicts/{first}/resolve",
                    {"action": "paid_other_way", "by": "M007", "reason": "paid cash"})  # fmt: skip
    assert r.status_code in (200, 201), r.text

    async def resolved_everywhere() -> bool:
        for rid in (T1, T2, HQ):
            found = {c["id"]: c for c in await _get(mesh, rid, "/conflicts")}
            if (found[first].get("resolution") or {}).get("action") != "paid_other_way":
                return False
        return True

    await wait_until(resolved_everywhere, "the resolution at every replica", 60)
    await mesh.wait_converged()

    # A card number typed anywhere is refused; no file the run left holds one.
    for bad in (
        card_sale(500, "4111 1111 1111 1111"),
        {**card_sale(500, "tok_fine_0001"), "cashier": "5500-0000-0000-0004"},
    ):
        assert (await _post(mesh, T1, "/sales", bad)).status_code == 422
    assert scan_for_pans(tmp_path) == []


async def test_a_till_killed_between_an_approval_and_its_sale_reverses_it(
    tmp_path: Path, acquirer: AcquirerProc
) -> None:
    """SIGKILL while the processor is approving (a slow token: it answers after 5 s):
    the card is approved there and no sale is stored. The restarted till's forwarder
    finds the key it noted before asking, held by no stored sale, and reverses it."""
    mesh = Mesh(tmp_path, {"s1": ["t1"]})
    mesh.site = mesh.site.model_copy(
        update={
            "acquirer_url": acquirer.url,
            "acquirer_key_file": str(acquirer.data / KEY_FILE),
            "acquirer_timeout_s": 15.0,  # the till waits out the slow approval
            "card_forward_every_s": 0.3,
            "card_resolve_after_s": 1.0,
        }
    )
    save_site(mesh.root, mesh.site)
    notes = mesh.site.data_dir(mesh.root, T1) / REVERSALS_FILE

    def asked() -> list[str]:
        if not notes.exists():
            return []
        with contextlib.closing(sqlite3.connect(notes)) as conn:
            return [k for (k,) in conn.execute("SELECT key FROM asking")]

    selling: asyncio.Task[Any] | None = None
    try:
        await mesh.start(T1)
        selling = asyncio.create_task(_post(mesh, T1, "/sales", card_sale(1_200, "tok_slow_01")))

        async def noted() -> bool:
            return bool(asked())

        await wait_until(noted, "the key noted before the ask", 10, every=0.01)
        (key,) = asked()

        async def deciding() -> bool:
            return await acquirer.in_flight() == 1

        await wait_until(deciding, "the processor deciding it", 10, every=0.01)
        mesh[T1].kill(signal.SIGKILL)
        with pytest.raises(httpx.HTTPError):
            await selling

        async def approval() -> dict[str, Any] | None:
            found = [r for r in await acquirer.records() if r["key"] == key]
            return found[0] if found else None

        record = await wait_until(approval, "the processor's approval of the lost sale", 15)
        assert (record["kind"], record["status"], record["reversed"]) == (
            "authorise",
            "approved",
            0,
        )  # fmt: skip: the card is charged, and its till holds no sale
        mesh[T1].stop()
        mesh[T1].spawn(fresh=False)
        await mesh[T1].wait_serving()

        async def reversed_() -> bool:
            got = await approval()
            return got is not None and got["reversed"] == 1

        await wait_until(reversed_, "the restarted till reversing it", 30)
        assert asked() == []
        rows = await _get(mesh, T1, "/reports/payments")
        assert sum(r["payments"] for r in rows) == 0  # no sale: nothing to keep it
    finally:
        if selling is not None and not selling.done():
            selling.cancel()
        assert not await mesh.close()


def test_the_pan_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    (tmp_path / "wal").write_bytes(b"\x00\x13tok 4111-1111-1111-1111\x00 1733412345678 ")
    (tmp_path / "log").write_bytes(b"amex 378282246310005; not luhn 4111111111111112")
    assert scan_for_pans(tmp_path) == [("log", 5), ("wal", 6)]
