"""The acquirer as a real process, through the till's HTTP adapter: approvals, declines,
one record per key (a retry is a replay, not a second charge), records that outlive a
restart, and every failure to answer is `ProcessorUnreachable`."""

from __future__ import annotations

import signal

import pytest

from replicas.errors import ProcessorUnreachable
from replicas.payments.adapter import CardAsk, HttpAcquirer
from tests.acquirer_kit import AcquirerProc


def ask(key: str, token: str = "tok_visa_0001", amount: int = 1250) -> CardAsk:
    return CardAsk(key=key, token=token, last4="4242", amount=amount, terminal_ref="T1-77")


async def test_online_approval_and_decline(acquirer: AcquirerProc) -> None:
    http = HttpAcquirer(acquirer.url)
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
    http = HttpAcquirer(acquirer.url)
    try:
        first = await http.capture(ask("s1/t1:5#0"))
        again = await http.capture(ask("s1/t1:5#0"))
    finally:
        await http.aclose()
    assert first == again and first.approved
    acquirer.kill(signal.SIGKILL)
    await acquirer.start()
    http = HttpAcquirer(acquirer.url)
    try:
        after = await http.capture(ask("s1/t1:5#0"))
    finally:
        await http.aclose()
    assert after == first
    records = await acquirer.records()
    assert [(r["key"], r["kind"], r["calls"]) for r in records] == [("s1/t1:5#0", "capture", 3)]
    assert "token" not in records[0]  # the record's view shows last 4 only


async def test_a_key_used_for_another_amount_is_refused(acquirer: AcquirerProc) -> None:
    http = HttpAcquirer(acquirer.url)
    try:
        await http.capture(ask("s1/t1:6#0", amount=100))
        with pytest.raises(ProcessorUnreachable, match="HTTP 409"):
            await http.capture(ask("s1/t1:6#0", amount=999))
    finally:
        await http.aclose()


async def test_outage_timeout_and_a_dead_process_are_unreachable(acquirer: AcquirerProc) -> None:
    http = HttpAcquirer(acquirer.url, timeout_s=0.5)
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
