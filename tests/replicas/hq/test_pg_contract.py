"""HQ on PostgreSQL gives the figures HQ on SQLite gives, for the same events.

The same events go through the real ingest paths of both (`core.log.EventLog` with the
SQLite fold, `replicas.hq.store.PgLog`), in the same batches; every report, the catalog
and the stock of every store must then be equal, for hypothesis' histories of sales
(taxed inclusive or exclusive, or from before tills computed tax; paid in cash, by card
online or deferred), voids and refunds (of known and unknown sales, giving back tax),
counts, price writes, shifts, card floor limits and outcomes of deferred payments
(captured, declined, expired, in any order, twice, of unknown payments, from another
store's till), and the managers' decisions on declined cards. The folded state HQ on
PostgreSQL keeps for conflicts (`replicas.hq.folded`), caught up after every batch,
must then report the same conflicts, the same state digest and the same sales
(`GET /sales/{id}`'s read) as the SQLite log's own state.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conflict import cards
from conflict.conflicts import conflict_id
from core.events import (
    CardCaptured,
    CardDeclined,
    CardExpired,
    CardLimitsSet,
    ConflictResolved,
    KeyRevoked,
    SaleVoided,
)
from core.fold import Accepted
from tests.conflict.factory import Chain, sale_body, scenarios
from tests.replicas.hq.pg_kit import on_one_database, reset, through_both


def _reports_equal(events: list[Accepted], cuts: list[int], dsn: str, tmp_path: Path) -> None:
    reset(dsn)
    db = tmp_path / f"hq-{len(list(tmp_path.iterdir()))}.db"
    on_sqlite, on_pg = asyncio.run(through_both(events, cuts, db, dsn))
    for name, rows in on_sqlite.items():
        assert on_pg[name] == rows, name


HISTORIES = given(events=scenarios(60, tax=True), cuts=st.lists(st.integers(0, 60), max_size=4))


@on_one_database(25)
@HISTORIES
def test_reports_equal_on_sqlite_and_postgres(
    events: list[Accepted], cuts: list[int], pg_dsn: str, tmp_path: Path
) -> None:
    _reports_equal(events, cuts, pg_dsn, tmp_path)


@pytest.mark.soak
@on_one_database(250)
@HISTORIES
def test_reports_equal_on_sqlite_and_postgres_for_many_histories(
    events: list[Accepted], cuts: list[int], pg_dsn: str, tmp_path: Path
) -> None:
    _reports_equal(events, cuts, pg_dsn, tmp_path)


def _card_story() -> list[Accepted]:
    """Deferred card payments with every outcome: one captured after a till declined it
    (captured wins), one declined then written off (by the first of two decisions), one
    expired and left open, one voided before it was declined (not counted), one
    outstanding; an online one; limits for every store, then for s1, then again."""
    chain, ms = Chain(), 1_000_000
    sales = [
        chain.make("s1/t1", sale_body([("A", 1, 100 * (i + 1))], f"R{i}", "sh1", card), ms + i)
        for i, card in enumerate(("deferred",) * 5 + ("online",))
    ]
    pid = [f"{a.event.id}#0" for a in sales]
    declined = conflict_id("card_declined", pid[1], [sales[1].event.id])
    bodies = [
        ("s1/t2", CardDeclined(payment=pid[0], reason="do not honour")),
        ("s1/t1", CardCaptured(payment=pid[0], reference="cap-1")),
        ("s1/t2", CardDeclined(payment=pid[1], reason="insufficient funds")),
        ("s1/t1", CardExpired(payment=pid[2])),
        ("s1/t1", SaleVoided(sale=sales[3].event.id)),
        ("s1/t2", CardDeclined(payment=pid[3])),
        ("hq", CardLimitsSet(per_payment=5000, till_total=20_000, till_count=4, max_age_s=600)),
        ("hq", CardLimitsSet(per_payment=7000, till_total=30_000, till_count=5, max_age_s=900,
                             store="s1")),
        ("hq", CardLimitsSet(per_payment=8000, till_total=30_000, till_count=5, max_age_s=900,
                             store="s1")),
        ("s1/t1", ConflictResolved(conflict=declined, action="written_off", by="mgr")),
        ("hq", ConflictResolved(conflict=declined, action="paid_other_way", by="hq")),
    ]  # fmt: skip
    later = [chain.make(o, b, ms + 100 + i) for i, (o, b) in enumerate(bodies)]
    return sales + later


def test_card_outcomes_limits_and_decisions_equal_on_sqlite_and_postgres(
    pg_dsn: str, tmp_path: Path
) -> None:
    reset(pg_dsn)
    events = _card_story()
    on_sqlite, on_pg = asyncio.run(through_both(events, [3, 9], tmp_path / "hq.db", pg_dsn))
    for name, rows in on_sqlite.items():
        assert on_pg[name] == rows, name
    # and they say what the story did (the comparison alone would pass on empty reports)
    cards_s1 = [
        (r["settlement"], r["payments"], r["amount"])
        for r in on_pg["payments1"] if r["method"] == "card"
    ]  # fmt: skip
    assert cards_s1 == [
        ("captured", 1, 100), ("declined", 1, 200), ("expired", 1, 300), ("outstanding", 1, 500),
        ("online", 1, 600),
    ]  # fmt: skip
    assert on_pg["declines_s1"] == [
        {"store": "s1", "outcome": "declined", "decision": "written_off", "payments": 1,
         "amount": 200},
        {"store": "s1", "outcome": "expired", "decision": "open", "payments": 1, "amount": 300},
    ]  # fmt: skip
    assert on_pg["exposure_s1"] == [
        {"store": "s1", "till": "s1/t1", "payments": 1, "amount": 500,
         "oldest_hlc": events[4].event.hlc, "oldest_age_s": 99},
    ]  # fmt: skip
    assert on_pg["limits_s1"] == cards.CardLimits(8000, 30_000, 5, 900)
    declined = {c.subject: c.resolution for c in on_pg["conflicts"] if c.kind == "card_declined"}
    assert sorted(declined) == [f"{events[1].event.id}#0", f"{events[2].event.id}#0"]
    assert declined[f"{events[1].event.id}#0"].action == "written_off"  # type: ignore[union-attr]
    assert on_pg["limits_s2"] == cards.CardLimits(5000, 20_000, 4, 600)


def test_a_revocation_after_the_fold_is_taken_out_of_the_folded_state(
    pg_dsn: str, tmp_path: Path
) -> None:
    """HQ revokes a till after the folded state took in its sales (past the cut, and
    a receipt collision they made): rebuilt without them, the state equals the SQLite
    HQ's, which flags them revoked and rebuilds too; a sale after the revocation is
    stored but never state on either."""
    reset(pg_dsn)
    chain, ms = Chain(), 1_000_000
    sold = [chain.make("s1/t1", sale_body([("A", 1, 100)], f"R{i % 3}"), ms + i) for i in range(5)]
    other = [chain.make("s1/t2", sale_body([("A", 1, 100)], "R0"), ms + 10)]
    revoked = [chain.make("hq", KeyRevoked(replica="s1/t1", after_seq=2), ms + 20)]
    later = [chain.make("s1/t1", sale_body([("A", 1, 100)], "R9"), ms + 30)]
    events = sold + other + revoked + later
    on_sqlite, on_pg = asyncio.run(through_both(events, [6, 7], tmp_path / "hq.db", pg_dsn))
    for name, rows in on_sqlite.items():
        assert on_pg[name] == rows, name
    assert [s["id"] for s in on_pg["sales"] if s] == ["s1/t1:1", "s1/t1:2", "s1/t2:1"]
    receipts = [c.events for c in on_pg["conflicts"] if c.kind == "receipt_collision"]
    assert receipts == [["s1/t1:1", "s1/t2:1"]]  # s1/t1:4 (R0 too) is past the cut
