"""The simulator's in-memory log keeps the part of the log contract sync relies on."""

from tests.core.log_contract import SyncLogContract
from tests.replicas.simnet import MemLog


class TestSimulatorLog(SyncLogContract):
    async def make_sync_log(self, path, in_scope):
        return MemLog("s1/t1", in_scope)
