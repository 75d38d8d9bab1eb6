import sqlite3

import msgspec
import pytest

from core import events
from core import log as log_module
from core.errors import DatabaseCorrupt, SchemaTooNew
from core.events import SaleVoided
from core.fold import FLAG_UNAPPLIED
from core.log import EventLog
from tests.core.folds import CountingFold, counts
from tests.core.log_contract import EventLogContract, SyncLogContract
from tests.factories import chain


class TestSqliteEventLog(EventLogContract, SyncLogContract):
    async def make_log(self, path, replica_id, fold, **kw):
        return await EventLog.open(path, replica_id, fold, **kw)

    async def make_sync_log(self, path, in_scope):
        return await EventLog.open(path, "s1/t1", CountingFold(), in_scope=in_scope)


async def test_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(DatabaseCorrupt):
        await EventLog.open(path, "s1/t1", CountingFold())


async def test_file_from_a_newer_tillmesh_is_refused(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(SchemaTooNew) as info:
        await EventLog.open(path, "s1/t1", CountingFold())
    assert info.value.found == 99


async def test_durability_settings(tmp_path):
    log = await EventLog.open(tmp_path / "d.db", "s1/t1", CountingFold())
    try:
        mode = await log.read(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
    finally:
        await log.close()


async def test_a_new_build_folds_in_what_an_older_one_stored_unapplied(tmp_path, monkeypatch):
    """A till still on schema 2 stores a schema-3 void unapplied; once it runs a build
    that reads it, opening the log folds it in (no `log rebuild` needed), and what even
    that build cannot read stays flagged for the one that can."""
    voids = chain("s1/t2", [SaleVoided(sale="s1/t2:9", by="C042") for _ in range(2)])
    future = msgspec.structs.replace(voids[1], schema=events.SCHEMA_VERSION + 1)
    with monkeypatch.context() as older:
        for module in (events, log_module):
            older.setattr(module, "SCHEMA_VERSION", 2, raising=False)
        async with await EventLog.open(tmp_path / "t.db", "s1/t1", CountingFold()) as log:
            await log.ingest([voids[0], future])
            assert await log.read(counts) == {}
    async with await EventLog.open(tmp_path / "t.db", "s1/t1", CountingFold()) as log:
        assert await log.read(counts) == {"s1/t2": 1}
        flags = await log.read(lambda c: c.execute("SELECT seq, flags FROM events").fetchall())
        assert [(seq, bool(f & FLAG_UNAPPLIED)) for seq, f in flags] == [(1, False), (2, True)]


async def test_a_build_rolled_back_and_forward_again_folds_in_what_it_left(tmp_path, monkeypatch):
    """Review: the new build ran, an older one (rolled back) stored a schema-3 void
    unapplied, the new build came back: it must fold it in at open, as the first time."""
    (void,) = chain("s1/t2", [SaleVoided(sale="s1/t2:9", by="C042")])
    async with await EventLog.open(tmp_path / "t.db", "s1/t1", CountingFold()):
        pass  # the new build opened it once
    with monkeypatch.context() as older:
        for module in (events, log_module):
            older.setattr(module, "SCHEMA_VERSION", 2, raising=False)
        async with await EventLog.open(tmp_path / "t.db", "s1/t1", CountingFold()) as log:
            await log.ingest([void])
            assert await log.read(counts) == {}
    async with await EventLog.open(tmp_path / "t.db", "s1/t1", CountingFold()) as log:
        assert await log.read(counts) == {"s1/t2": 1}


async def test_commit_observers_count_appends_ingests_and_time(tmp_path):
    """What metrics count comes from the log's own commits: appends, events stored per
    peer, duplicates and gaps; an observer that raises harms neither sales nor others."""
    ticks = iter(range(1000))
    log = await EventLog.open(
        tmp_path / "o.db", "s1/t1", CountingFold(), timer=lambda: float(next(ticks))
    )
    seen = []
    log.commit_observers += [lambda s: 1 / 0, seen.append]
    try:
        await log.append_many([SaleVoided(sale="s1/t9:1"), SaleVoided(sale="s1/t9:2")])
        remote = chain("s1/t2", [SaleVoided(sale=f"s1/t9:{i + 1}") for i in range(3)])
        await log.ingest(remote[:2], peer="s1/t2")
        await log.ingest([remote[1], remote[2]], peer="hq")  # one again, one new
        gap = chain("s1/t3", [SaleVoided(sale=f"s1/t9:{i + 1}") for i in range(2)])
        await log.ingest(gap[1:], peer="s1/t3")  # seq 2 without 1: held
    finally:
        await log.close()
    assert [(s.appended, s.ingested, s.duplicates, s.held) for s in seen] == [
        (2, {}, 0, 0),
        (0, {"s1/t2": 2}, 0, 0),
        (0, {"hq": 1}, 1, 0),
        (0, {}, 0, 1),
    ]
    assert all(s.seconds == 1.0 for s in seen)  # one tick of the timer passed in
