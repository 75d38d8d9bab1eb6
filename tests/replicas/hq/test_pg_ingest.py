"""HQ's PostgreSQL ingest keeps the log's rules: idempotent, chains contiguous (gaps
held, then drained), forged and equivocating events refused and kept as evidence, an
origin outside the worker's share refused, and a version vector that survives reopening."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import pytest

from core.errors import ChainBroken, Equivocation, OutOfScope, SignatureError, StorageError
from core.events import Event, RawEvent, encode_event, event_hash
from core.signing import Ed25519Signer, KeyRegistry, new_signing_seed
from replicas.hq.store import PgLog
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
