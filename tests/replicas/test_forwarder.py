"""A till's forwarding of deferred card payments, one round at a time, over a real log
and the acquirer as a real process: capture or decline, oldest first, once; expiry by
the store's max age (the clock passed in); backoff while the processor is away; and
ingest refusing card events from authors who may not write them."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from conflict import cards
from conflict.policies import state_fold
from core import compact
from core.clock import hlc_ms
from core.compact import read_heads
from core.errors import WrongAuthor
from core.events import CardCaptured, CardLimitsSet, Payment, SaleCompleted, SaleLine
from core.log import EventLog
from replicas.ops.common import STATE_TABLES, compact_db
from replicas.ops.common import open_log as open_ops_log
from replicas.payments.adapter import CardAsk
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
    processor = acquirer.client()
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


async def test_a_payment_the_processor_refuses_is_declined_and_the_queue_moves_on(
    log: EventLog, acquirer: AcquirerProc
) -> None:
    bad = await log.append(deferred("tok_offline_010", 700, "R10"))
    good = await log.append(deferred("tok_offline_011", 300, "R11"))
    processor = acquirer.client()
    try:  # the first one's key already used for another amount: the acquirer says 409
        await processor.capture(CardAsk(key=f"{bad.id}#0", token="tok_offline_010",
                                        last4="4242", amount=1))  # fmt: skip
        fwd = Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5)
        assert await fwd.round() == 0.5
    finally:
        await processor.aclose()
    assert await _outcomes(log) == [(f"{bad.id}#0", "declined"), (f"{good.id}#0", "captured")]
    reason = await log.read(
        lambda c: c.execute(
            "SELECT detail FROM st_card_outcomes WHERE payment = ?", (f"{bad.id}#0",)
        ).fetchone()[0]
    )
    assert reason.startswith("refused by the processor:") and "another request" in reason


async def _compacted(path: Path, floor: dict[str, int] | None = None) -> dict[str, int]:
    """Compact the (closed) log at `path` as `log compact` does, HQ and the till holding
    all of it; or, given `floor`, drop exactly that (as a tool that keeps nothing would)."""
    with closing(open_ops_log(path, write=True)) as conn:
        heads = {o: h.seq for o, h in read_heads(conn).items()}
        if floor is None:
            floor, _ = compact_db(conn, {"hq": heads, "s1/t1": heads})
        else:
            compact.compact(conn, state_fold(conn), STATE_TABLES, floor)
    return floor


async def test_compaction_keeps_the_sales_of_payments_still_to_forward(
    tmp_path: Path, acquirer: AcquirerProc
) -> None:
    path = tmp_path / "till.db"
    log = await open_log(path, "s1/t1")
    cash = Payment(method="cash", amount=200)
    await log.append(SaleCompleted(receipt="R20", lines=[SaleLine("MISC", 1, 200)],
                                   payments=[cash]))  # fmt: skip
    held = await log.append(deferred("tok_offline_021", 400, "R21"))  # still to forward
    processor = acquirer.client()
    try:
        await log.append_many([deferred("tok_offline_022", 100, f"R2{i}") for i in (2, 3)])
        await log.close()
        floor = await _compacted(path)
        assert floor["s1/t1"] == held.seq - 1
        log = await open_log(path, "s1/t1")
        assert await Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5).round()
    finally:
        await processor.aclose()
        await log.close()
    assert [r["status"] for r in await acquirer.records()] == ["approved"] * 3


async def test_a_payment_whose_sale_was_compacted_away_is_skipped_not_the_round(
    tmp_path: Path, acquirer: AcquirerProc, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "till.db"
    log = await open_log(path, "s1/t1")
    lost = await log.append(deferred("tok_offline_030", 300, "R30"))
    kept = await log.append(deferred("tok_offline_031", 500, "R31"))
    await log.close()
    await _compacted(path, {"s1/t1": lost.seq})  # as a tool that kept nothing would
    log = await open_log(path, "s1/t1")
    processor = acquirer.client()
    try:
        assert await Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5).round()
        assert await _outcomes(log) == [(f"{kept.id}#0", "captured")]  # lost stays outstanding
    finally:
        await processor.aclose()
        await log.close()
    assert f"cannot forward payment {lost.id}#0" in caplog.text


async def test_unforwarded_past_the_max_age_expires_unsent(
    log: EventLog, acquirer: AcquirerProc
) -> None:
    old = await log.append(deferred("tok_offline_003", 500, "R3"))
    limits = cards.DEFAULT_LIMITS
    later = hlc_ms(old.hlc) + (limits.max_age_s + 1) * 1000
    processor = acquirer.client()
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
    processor = acquirer.client(timeout_s=0.5)
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
