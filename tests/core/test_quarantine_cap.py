"""The quarantine is bounded: a hostile peer cannot grow it without end."""

from __future__ import annotations

import gc
import sqlite3

import msgspec

from core.batch import Transaction, trim_quarantine
from core.events import encode_event
from core.log import EventLog, read_stats
from tests.core.folds import CountingFold
from tests.factories import cash_sale, chain


def _evidence(conn: sqlite3.Connection, kinds: list[str]) -> None:
    conn.executemany(
        "INSERT INTO quarantine (received_ms, peer, origin, seq, kind, detail, raw)"
        " VALUES (0, 'evil', 's9/t9', ?, ?, '', x'00')",
        list(enumerate(kinds, 1)),
    )


async def _log_file(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "q.db"
    await (await EventLog.open(path, "s1/t1", CountingFold())).close()
    return path, sqlite3.connect(path, isolation_level=None)


async def test_past_the_cap_the_oldest_evidence_goes_down_to_90_percent(tmp_path) -> None:
    path, conn = await _log_file(tmp_path)
    _evidence(conn, ["Equivocation", "ChainBroken"] * 5 + ["X"] * 10)  # ids 1..20
    assert trim_quarantine(conn, 20) == 0
    _evidence(conn, ["X"])  # 21 rows: over
    assert trim_quarantine(conn, 20) == 3  # down to 18 = 90% of 20, the oldest first
    kept = [i for (i,) in conn.execute("SELECT id FROM quarantine ORDER BY id")]
    assert kept == list(range(4, 22))
    assert trim_quarantine(conn, 20) == 0  # under the cap again: nothing to do
    assert read_stats(conn, path).quarantine_dropped == 3


async def test_a_log_under_attack_keeps_its_events_and_a_bounded_quarantine(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("core.batch.MAX_QUARANTINE_ROWS", 50)
    log = await EventLog.open(tmp_path / "a.db", "s1/t1", CountingFold())
    try:
        (original,) = chain("s1/t2", [cash_sale(price=100)])
        await log.ingest([original])
        for i in range(30):  # every forged version of s1/t2:1 is a new equivocation
            forged = chain("s1/t2", [cash_sale(price=200 + i, receipt=f"F{i}") for _ in range(3)])
            result = await log.ingest(forged, peer="evil")
            assert result.rejected
        stats = await log.stats()
        assert stats.quarantined <= 50 and stats.quarantine_dropped > 0
        assert await log.read_range("s1/t2", 1, 10) == [encode_event(original)]
    finally:
        await log.close()


async def test_refused_bodies_do_not_keep_their_transactions_alive(tmp_path) -> None:
    """A refused event's error must not pin the group commit that refused it (its
    traceback's frames hold the Transaction, and the untracked CheckedEvent the error)."""
    log = await EventLog.open(tmp_path / "a.db", "s1/t1", CountingFold())
    try:
        (good,) = chain("s1/t2", [cash_sale(price=100)])
        bad = msgspec.structs.replace(good, body=good.body[:-1] + b"\x00")  # invalid body
        for _ in range(20):  # the head never moves: a peer can resend it forever
            assert (await log.ingest([bad], peer="evil")).rejected
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, Transaction)]
        assert len(alive) <= 1, f"{len(alive)} transactions kept alive"
    finally:
        await log.close()
