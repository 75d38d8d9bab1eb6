"""HQ's PostgreSQL ingest keeps the log's rules: idempotent, chains contiguous (gaps
held, then drained), forged and equivocating events refused and kept as evidence, an
origin outside the worker's share refused, a version vector that survives reopening, and
events an older build stored unapplied applied by the build that reads them."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import pytest

from conflict.reports import Window
from core.batch import MAX_HELD_AHEAD
from core.errors import ChainBroken, Equivocation, OutOfScope, SignatureError, StorageError
from core.events import (
    SCHEMA_VERSION,
    Event,
    RawEvent,
    RefundIssued,
    RefundLine,
    encode_event,
    event_hash,
)
from core.fold import FLAG_UNAPPLIED
from core.signing import Ed25519Signer, KeyRegistry, new_signing_seed
from replicas.hq import reports as pg_reports
from replicas.hq.store import PgLog
from tests.conflict.factory import sale_body, taxed_sale
from tests.factories import cash_sale, chain


def _raw(events: list[Event]) -> list[RawEvent]:
    return [RawEvent(ev, encode_event(ev)) for ev in events]


def _count(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return row[0]


def _signed(events: list[Event], signer: Ed25519Signer) -> list[Event]:
    return [msgspec.structs.replace(ev, sig=signer.sign(event_hash(ev))) for ev in events]


async def test_the_same_events_twice_are_stored_and_projected_once(pg_dsn: str) -> None:
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(50)])
    async with await PgLog.open(pg_dsn) as log:
        first = await log.ingest(_raw(events))
        again = await log.ingest(_raw(events[10:]))
    assert (len(first.stored), len(again.stored), again.duplicates) == (50, 0, 40)
    assert _count(pg_dsn, "SELECT count(*) FROM hq_events") == 50
    assert _count(pg_dsn, "SELECT count(*) FROM hq_sales") == 50
    assert _count(pg_dsn, "SELECT sum(total) FROM hq_sales") == 50 * 250


async def test_a_gap_is_held_durably_and_drains_when_filled(pg_dsn: str) -> None:
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(10)])
    async with await PgLog.open(pg_dsn) as log:
        held = await log.ingest(_raw(events[5:]))
        assert (held.held, log.version_vector()) == (5, {})
    async with await PgLog.open(pg_dsn) as log:  # the held rows outlive the process
        filled = await log.ingest(_raw(events[:5]))
        assert len(filled.stored) == 10
        assert log.version_vector() == {"s1/t1": 10}
    assert _count(pg_dsn, "SELECT count(*) FROM hq_pending") == 0
    assert _count(pg_dsn, "SELECT count(*) FROM hq_sales") == 10


async def test_an_event_too_far_ahead_is_left_for_the_pulls_not_refused(pg_dsn: str) -> None:
    """As on SQLite (`core.batch.place_remote`, one rule for both): a push a million
    events past the head is counted, neither held nor refused (a refusal would back
    off an honest peer); one just within the limit is held."""
    far = chain("s1/t1", [cash_sale()], first_seq=MAX_HELD_AHEAD + 2)
    near = chain("s1/t1", [cash_sale()], first_seq=MAX_HELD_AHEAD)
    async with await PgLog.open(pg_dsn) as log:
        result = await log.ingest(_raw(far))
        assert (result.too_far, result.held, result.rejected, result.stored) == (1, 0, [], [])
        held = await log.ingest(_raw(near))
        assert (held.held, held.too_far, held.rejected) == (1, 0, [])
    assert _count(pg_dsn, "SELECT count(*) FROM hq_pending") == 1
    assert _count(pg_dsn, "SELECT count(*) FROM hq_quarantine") == 0


async def test_forged_equivocating_and_foreign_events_are_refused_and_kept(pg_dsn: str) -> None:
    till, thief = Ed25519Signer(new_signing_seed()), Ed25519Signer(new_signing_seed())
    registry = KeyRegistry({"s1/t1": till.public_key, "s2/t1": till.public_key})
    honest = _signed(chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(3)]), till)
    forged = _signed(chain("s1/t1", [cash_sale(price=1)], prev=event_hash(honest[2]),
                           first_seq=4), thief)  # fmt: skip
    twin = _signed(chain("s1/t1", [cash_sale(price=999)]), till)
    broken = _signed(chain("s1/t1", [cash_sale()], prev=b"x" * 32, first_seq=4), till)
    foreign = _signed(chain("s2/t1", [cash_sale()]), till)
    async with await PgLog.open(
        pg_dsn, owns=lambda origin: origin.startswith("s1/"), verifier=registry
    ) as log:
        ok = await log.ingest(_raw(honest))
        bad = await log.ingest(_raw(forged + twin + broken + foreign), peer="rogue")
        assert len(ok.stored) == 3 and bad.stored == []
        kinds = sorted(type(e).__name__ for e in bad.rejected)
        expected = [Equivocation, SignatureError, ChainBroken, OutOfScope]
        assert kinds == sorted(k.__name__ for k in expected)
        assert log.version_vector() == {"s1/t1": 3}
    assert _count(pg_dsn, "SELECT count(*) FROM hq_quarantine WHERE peer = 'rogue'") == 4
    assert _count(pg_dsn, "SELECT count(*) FROM hq_sales") == 3


async def test_a_worker_resumes_from_the_databases_version_vector(pg_dsn: str) -> None:
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(20)])
    async with await PgLog.open(pg_dsn) as log:
        await log.ingest(_raw(events[:12]))
    async with await PgLog.open(pg_dsn) as log:
        assert log.version_vector() == {"s1/t1": 12}
        assert log.head("s1/t1") == (12, event_hash(events[11]))
        rest = await log.ingest(_raw(events))
        assert (len(rest.stored), rest.duplicates) == (8, 12)
        assert await log.read_range("s1/t1", 19, 5) == [encode_event(e) for e in events[18:]]


async def test_two_writers_of_one_origin_never_double_an_event(pg_dsn: str) -> None:
    """Two workers given the same store by mistake: the one whose head is stale has its
    batch rolled back, reloads the database's heads, and its next try is a duplicate."""
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(10)])
    async with await PgLog.open(pg_dsn) as a, await PgLog.open(pg_dsn) as b:
        await a.ingest(_raw(events[:5]))
        with pytest.raises(StorageError, match="another worker"):
            await b.ingest(_raw(events[:3]))  # b read no head for s1/t1: rolled back
        assert b.version_vector() == {"s1/t1": 5}  # reloaded from the database
        await a.ingest(_raw(events[5:8]))
        with pytest.raises(StorageError, match="another worker"):
            await b.ingest(_raw(events[5:]))  # b's head (5) is stale: rolled back
        assert b.version_vector() == {"s1/t1": 8}
        again = await b.ingest(_raw(events[5:]))
        assert (len(again.stored), again.duplicates) == (2, 3)
    assert _count(pg_dsn, "SELECT count(*) FROM hq_events") == 10
    assert _count(pg_dsn, "SELECT count(DISTINCT id) FROM hq_sales") == 10
    assert _count(pg_dsn, "SELECT count(*) FROM hq_sales") == 10


async def test_an_event_row_past_its_head_refuses_the_batch_whole(pg_dsn: str) -> None:
    """Events are COPYed straight into hq_events, not through ON CONFLICT: a row the
    heads do not account for (put there by hand) makes the key refuse the batch, which
    is rolled back whole (no head, fact or event of it kept), never doubled."""
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(6)])
    async with await PgLog.open(pg_dsn) as log:
        await log.ingest(_raw(events[:2]))
        with psycopg.connect(pg_dsn) as conn:  # event 4's row, its head left at 2
            conn.execute(
                "INSERT INTO hq_events SELECT store, origin, 4, hlc, type, flags, hash, raw"
                " FROM hq_events WHERE origin = 's1/t1' AND seq = 2"
            )
        with pytest.raises(StorageError, match="hq_events"):
            await log.ingest(_raw(events[2:]))
        assert log.version_vector() == {"s1/t1": 2}
        assert _count(pg_dsn, "SELECT count(*) FROM hq_sales") == 2
        assert _count(pg_dsn, "SELECT count(*) FROM hq_events") == 3


async def test_events_an_older_build_stored_unapplied_are_applied_once_read(pg_dsn: str) -> None:
    """A taxed sale and its refund (schema 6) as a build before tax stored them, flagged
    unapplied with no rows; the worker owning their till applies them when it opens. An
    event newer than this build stays stored, unapplied, for a build that reads it."""
    sale = taxed_sale(sale_body([("C", 1, 1000)]), [2000], "exclusive")
    refund = RefundIssued(sale="s1/t1:1", lines=[RefundLine(line=0, qty=1, amount=600, tax=100)])
    events = chain("s1/t1", [sale, refund, cash_sale()])
    events[2] = msgspec.structs.replace(events[2], schema=SCHEMA_VERSION + 1)
    async with await PgLog.open(pg_dsn) as log:
        assert len((await log.ingest(_raw(events))).stored) == 3
    unapplied = f"SELECT count(*) FROM hq_events WHERE flags & {FLAG_UNAPPLIED} <> 0"
    assert _count(pg_dsn, unapplied) == 1
    with psycopg.connect(pg_dsn) as conn:  # what a build before schema 6 left
        conn.execute(f"UPDATE hq_events SET flags = flags | {FLAG_UNAPPLIED}")
        conn.execute("DELETE FROM hq_refund_lines; DELETE FROM hq_refunds; DELETE FROM hq_sales")
    async with await PgLog.open(pg_dsn, owns=lambda origin: origin.startswith("s2/")):
        pass  # not this worker's till: left for its owner
    assert (_count(pg_dsn, unapplied), _count(pg_dsn, "SELECT count(*) FROM hq_sales")) == (3, 0)
    async with await PgLog.open(pg_dsn):
        pass
    assert _count(pg_dsn, unapplied) == 1
    with psycopg.connect(pg_dsn) as conn:
        assert [
            (r["rate_bp"], r["gross"], r["tax"], r["net_tax"])
            for r in pg_reports.tax_report(conn, Window())
        ] == [(2000, 1200, 200, 100)]
        assert pg_reports.shift_totals(conn, "")["net"] == 1200 - 600
