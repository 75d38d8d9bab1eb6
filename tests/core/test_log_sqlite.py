import sqlite3

import pytest

from core.errors import DatabaseCorrupt, SchemaTooNew
from core.log import EventLog
from tests.core.folds import CountingFold
from tests.core.log_contract import EventLogContract, SyncLogContract


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
