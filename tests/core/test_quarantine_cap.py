"""The quarantine is bounded: a hostile peer cannot grow it without end."""

from __future__ import annotations

import sqlite3

from tests.core.folds import CountingFold
from tests.factories import cash_sale, chain
from tillmesh.core.batch import trim_quarantine
from tillmesh.core.events import encode_event
from tillmesh.core.log import EventLog, read_stats


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


async def test_oldest_evidence_goes_first_equivocations_last(tmp_path) -> None:
    path, conn = await _log_file(tmp_path)
    _evidence(conn, ["Equivocation", "ChainBroken", "OutOfScope", "Equivocation"] + ["X"] * 6)
    assert trim_quarantine(conn, 6) == 4  # the four oldest that are not equivocations
    kept = [k for (k,) in conn.execute("SELECT kind FROM quarantine ORDER BY id")]
    assert kept == ["Equivocation", "Equivocation"] + ["X"] * 4
    assert trim_quarantine(conn, 100) == 0
    assert read_stats(conn, path).quarantine_dropped == 4


async def test_equivocations_go_too_once_they_fill_the_quarantine(tmp_path) -> None:
    path, conn = await _log_file(tmp_path)
    _evidence(conn, ["Equivocation"] * 10)
    assert trim_quarantine(conn, 4) == 6
    kept = [s for (s,) in conn.execute("SELECT seq FROM quarantine ORDER BY id")]
    assert kept == [7, 8, 9, 10]  # the newest
    assert read_stats(conn, path).quarantine_dropped == 6


async def test_a_log_under_attack_keeps_its_events_and_a_bounded_quarantine(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr("tillmesh.core.batch.MAX_QUARANTINE_ROWS", 50)
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
