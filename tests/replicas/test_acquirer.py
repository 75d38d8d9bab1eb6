"""The acquirer as a real process, through the till's HTTP adapter: approvals, declines,
one record per key (a retry is a replay, not a second charge), records that outlive a
restart, and every failure to answer is `ProcessorUnreachable`."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from replicas.errors import ProcessorRefused, ProcessorUnreachable
from replicas.payments.adapter import CardAsk, HttpAcquirer
from replicas.payments.service import KEY_FILE
from tests.acquirer_kit import AcquirerProc
from tests.e2e.harness import Mesh


def ask(key: str, token: str = "tok_visa_0001", amount: int = 1250) -> CardAsk:
    return CardAsk(key=key, token=token, last4="4242", amount=amount, terminal_ref="T1-77")


async def test_online_approval_and_decline(acquirer: AcquirerProc) -> None:
    http = acquirer.client()
    try:
        ok = await http.authorise(ask("s1/t1|R-1|0"))
        no = await http.authorise(ask("s1/t1|R-2|0", token="tok_decline_0002"))
    finally:
        await http.aclose()
    assert ok.approved and ok.reference.startswith("A") and ok.reason == ""
    assert not no.approved and no.reason == "do not honour"


async def test_a_capture_sent_twice_is_one_record_and_outlives_a_restart(
    acquirer: AcquirerProc,
) -> None:
    http = acquirer.client()
    try:
        first = await http.capture(ask("s1/t1:5#0"))
        again = await http.capture(ask("s1/t1:5#0"))
    finally:
        await http.aclose()
    assert first == again and first.approved
    acquirer.kill(signal.SIGKILL)
    await acquirer.start()
    http = acquirer.client()
    try:
        after = await http.capture(ask("s1/t1:5#0"))
    finally:
        await http.aclose()
    assert after == first
    records = await acquirer.records()
    assert [(r["key"], r["kind"], r["calls"]) for r in records] == [("s1/t1:5#0", "capture", 3)]
    assert "token" not in records[0]  # the record's view shows last 4 only


async def test_a_key_used_for_another_amount_is_refused(acquirer: AcquirerProc) -> None:
    http = acquirer.client()
    try:
        await http.capture(ask("s1/t1:6#0", amount=100))
        # An answer (the processor refuses), not "no answer": never a reason to defer.
        with pytest.raises(ProcessorRefused, match="HTTP 409") as refused:
            await http.capture(ask("s1/t1:6#0", amount=999))
        assert refused.value.status == 409 and "another request" in refused.value.detail
    finally:
        await http.aclose()


async def test_fields_the_till_api_takes_fit_the_acquirer(acquirer: AcquirerProc) -> None:
    http = acquirer.client()
    try:
        long = CardAsk(key="s1/t1|" + "R" * 80 + "|0|" + "f" * 16, token="tok_visa_0001",
                       last4="4242", amount=100, terminal_ref="T" * 200)  # fmt: skip
        assert (await http.authorise(long)).approved
        with pytest.raises(ProcessorRefused, match="HTTP 422"):
            await http.authorise(CardAsk(key="k" * 257, token="tok_visa_0001", last4="4242",
                                         amount=100))  # fmt: skip
    finally:
        await http.aclose()


async def test_outage_timeout_and_a_dead_process_are_unreachable(acquirer: AcquirerProc) -> None:
    http = acquirer.client(timeout_s=0.5)
    try:
        with pytest.raises(ProcessorUnreachable, match="Timeout"):
            await http.authorise(ask("k-slow", token="tok_slow_0001"))
        await acquirer.set_mode("outage")
        with pytest.raises(ProcessorUnreachable, match="HTTP 503"):
            await http.authorise(ask("k-1"))
        acquirer.kill(signal.SIGKILL)
        with pytest.raises(ProcessorUnreachable, match="ConnectError"):
            await http.authorise(ask("k-2"))
    finally:
        await http.aclose()


@pytest.mark.parametrize("key", ["", "not-the-merchants-key"])
async def test_a_call_without_the_merchants_api_key_is_refused_and_moves_no_money(
    acquirer: AcquirerProc, key: str
) -> None:
    """Anyone on the network could otherwise capture, reverse or read the merchant's
    payments: every call but /healthz carries the key the acquirer made at first start."""
    stranger = HttpAcquirer(acquirer.url, api_key=key)
    try:
        for call in (stranger.authorise, stranger.capture):
            with pytest.raises(ProcessorRefused, match="API key is missing or wrong") as e:
                await call(ask("s1/t1|R-9|0"))
            assert e.value.status == 401
        with pytest.raises(ProcessorRefused, match="401"):
            await stranger.reverse("s1/t1|R-9|0")
    finally:
        await stranger.aclose()
    assert await acquirer.records() == []
    key_file = acquirer.data / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(acquirer.key) >= 32


async def test_a_till_without_the_acquirer_key_file_its_site_names_says_so_and_exits(
    no_till: Mesh,
) -> None:
    """Read before the log or a port is opened: it used to be read after, and the till
    printed the error and then hung on the log's thread (found in review)."""
    site_file = no_till.root / "site.json"
    site = json.loads(site_file.read_text())
    site.update(acquirer_url="http://127.0.0.1:9", acquirer_key_file="nowhere/acquirer.key")
    site_file.write_text(json.dumps(site))
    proc = no_till.procs["s1/t1"]
    proc.spawn(fresh=True)
    deadline = time.monotonic() + 30
    while proc.running and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    out = proc.tail()
    assert "acquirer_key_file" in out and "No such file" in out, out
    assert not proc.running, f"the till still runs 30 s after the error:\n{out}"
