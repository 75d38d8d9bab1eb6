"""A till's forwarding of deferred card payments, one round at a time, over a real log
and the acquirer as a real process: capture or decline, oldest first, once; expiry by
the store's max age (the clock passed in); backoff while the processor is away; and
ingest refusing card events from authors who may not write them."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conflict import cards
from core.clock import hlc_ms
from core.errors import WrongAuthor
from core.events import CardCaptured, CardLimitsSet, Payment, SaleCompleted, SaleLine
from core.log import EventLog
from replicas.payments.adapter import HttpAcquirer
from replicas.payments.forwarder import Forwarder
from tests.acquirer_kit import AcquirerProc
from tests.factories import chain
from tests.replicas.api_kit import open_log


def deferred(token: str, amount: int, receipt: str) -> SaleCompleted:
    pay = Payment(method="card", amount=amount, card_token=token, card_last4="4242",
                  auth="deferred")  # fmt: skip
    return SaleCompleted(receipt=receipt, lines=[SaleLine("MISC", 1, amount)], payments=[pay])


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "log.db", "s1/t1")
    yield log
    await log.close()


async def _outcomes(log: EventLog) -> list[tuple[str, str]]:
    rows = await log.read(
        lambda c: c.execute(
            "SELECT payment, kind FROM st_card_outcomes ORDER BY payment"
        ).fetchall()
    )
    return [(p, k) for p, k in rows]


async def test_a_round_captures_or_declines_each_once(
    log: EventLog, acquirer: AcquirerProc
) -> None:
    a = await log.append(deferred("tok_offline_001", 1200, "R1"))
    b = await log.append(deferred("tok_decline_002", 800, "R2"))
    processor = HttpAcquirer(acquirer.url)
    try:
        fwd = Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5)
        assert await fwd.round() == 0.5
        assert await fwd.round() == 0.5  # nothing left: no second capture
    finally:
        await processor.aclose()
    assert await _outcomes(log) == [(f"{a.id}#0", "captured"), (f"{b.id}#0", "declined")]
    records = await acquirer.records()
    assert [(r["key"], r["calls"], r["status"]) for r in records] == [
        (f"{a.id}#0", 1, "approved"), (f"{b.id}#0", 1, "declined")
    ]  # fmt: skip


async def test_unforwarded_past_the_max_age_expires_unsent(
    log: EventLog, acquirer: AcquirerProc
) -> None:
    old = await log.append(deferred("tok_offline_003", 500, "R3"))
    limits = cards.DEFAULT_LIMITS
    later = hlc_ms(old.hlc) + (limits.max_age_s + 1) * 1000
    processor = HttpAcquirer(acquirer.url)
    try:
        await Forwarder(log, "s1", lambda: processor, lambda: later).round()
    finally:
        await processor.aclose()
    assert await _outcomes(log) == [(f"{old.id}#0", "expired")]
    assert await acquirer.records() == []


async def test_no_answer_backs_off_and_keeps_the_payment(
    log: EventLog, acquirer: AcquirerProc
) -> None:
    await log.append(deferred("tok_offline_004", 500, "R4"))
    acquirer.kill(signal.SIGKILL)
    processor = HttpAcquirer(acquirer.url, timeout_s=0.5)
    try:
        fwd = Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=1.0, max_backoff_s=3)
        delays = [await fwd.round() for _ in range(3)]
    finally:
        await processor.aclose()
    assert delays == [2.0, 3.0, 3.0]
    assert await _outcomes(log) == []


async def test_ingest_refuses_card_events_from_who_may_not_write_them(log: EventLog) -> None:
    (limits,) = chain("s1/t2", [CardLimitsSet(per_payment=1, till_total=1, till_count=1,
                                              max_age_s=60)])  # fmt: skip
    (foreign,) = chain("s2/t1", [CardCaptured(payment="s1/t1:1#0")])
    result = await log.ingest([limits, foreign], peer="s1/t2")
    assert [type(e) for e in result.rejected] == [WrongAuthor, WrongAuthor]
    assert "only a replica of store s1 may write card.captured" in str(result.rejected[1])
