"""`replicas.payments.asking.resolve` against a real log: what it gives back, what it
leaves alone, and a log compacted past a sale of the window (its key unknown)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from conflict.state import StoreState
from core.compact import compact
from core.events import Payment, SaleCompleted, SaleLine
from core.log import EventLog
from core.sqlite import open_sync
from replicas.payments import asking
from replicas.payments.keys import auth_key
from replicas.payments.reversals import PendingReversals

TILL = "s1/t1"


def later_ms() -> int:
    """A wall clock past the resolve delay of every note taken so far."""
    return int(time.time() * 1000) + (asking.RESOLVE_AFTER_S + 100) * 1000


def _card_sale(receipt: str) -> tuple[SaleCompleted, str]:
    """A sale approved online, keeping the key it was asked under, as the API stores it."""
    pay = Payment(method="card", amount=250, card_token="tok_test_0001", card_last4="4242",
                  auth="online", approval="ok-1")  # fmt: skip
    key = auth_key(TILL, receipt, 0, pay, [pay])
    body = SaleCompleted(receipt=receipt, lines=[SaleLine(sku="A", qty=1, unit_price=250)],
                         payments=[msgspec.structs.replace(pay, attempt=key)])  # fmt: skip
    return body, key


async def _stored_with_notes(path: Path, owed: PendingReversals, *receipts: str) -> list[str]:
    """Card sales stored, each key still noted (as appends cancelled by their clients
    yet committed leave them); their keys."""
    log = await EventLog.open(path, TILL, StoreState())
    keys = []
    try:
        for receipt in receipts:
            body, key = _card_sale(receipt)
            await owed.asking(key)
            await log.append(body)
            keys.append(key)
    finally:
        await log.close()
    return keys


async def test_notes_of_stored_sales_are_dropped_and_a_lost_one_is_owed(tmp_path: Path) -> None:
    owed = PendingReversals(tmp_path / "card-reversals.db")
    stored = await _stored_with_notes(tmp_path / "log.db", owed, "R1", "R2")
    _, lost_key = _card_sale("R3")  # asked, approved, the till killed before its append
    await owed.asking(lost_key)
    log = await EventLog.open(tmp_path / "log.db", TILL, StoreState())
    try:
        assert await asking.resolve(log, owed, int(time.time() * 1000)) == []  # too young
        assert await asking.resolve(log, owed, later_ms()) == [lost_key]
    finally:
        await log.close()
    assert await owed.left_asking(2**62) == []
    assert await owed.keys() == [lost_key]  # owed: sent by the forwarder's retry
    assert await owed.was_given(lost_key) and not any([await owed.was_given(k) for k in stored])


async def test_a_log_compacted_past_a_sale_of_the_window_reverses_nothing(
    tmp_path: Path,
) -> None:
    """R1's event is compacted away (its state stays): its key cannot be read, so a
    note no readable sale holds may still be R1's. Nothing is reversed (a stored sale's
    charge must never be given back); the keys are logged for an operator."""
    owed = PendingReversals(tmp_path / "card-reversals.db")
    path = tmp_path / "log.db"
    first, second = await _stored_with_notes(path, owed, "R1", "R2")
    conn = open_sync(path)
    try:
        compact(conn, StoreState(), StoreState.tables, {TILL: 1})  # R1's event only
    finally:
        conn.close()
    log = await EventLog.open(path, TILL, StoreState())
    try:
        assert await asking.resolve(log, owed, later_ms()) == []
    finally:
        await log.close()
    assert await owed.keys() == [] and not await owed.was_given(first)
    assert not await owed.was_given(second) and await owed.left_asking(2**62) == []
