"""The log's WAL is checkpointed off the writer's thread (`core.walcheck`): after commits,
a connection of its own copies the WAL back into the database file, so the writer's
own autocheckpoint (inside some sale's commit) finds little or nothing left to copy."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from conflict.state import StoreState
from core.log import EventLog
from tests.factories import cash_sale


def _frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it already copied into the database file), read
    from the WAL index (`-shm`) without touching the database: its header's mxFrame at
    byte 16 and the checkpoint info's nBackfill at byte 96, native byte order
    (sqlite.org/walformat.html). A checkpoint of our own would copy them itself."""
    shm = Path(f"{db}-shm").read_bytes()[:100]
    return int.from_bytes(shm[16:20], sys.byteorder), int.from_bytes(shm[96:100], sys.byteorder)


async def test_commits_are_checkpointed_by_a_connection_of_their_own(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    log = await EventLog.open(db, "s1/t1", StoreState())
    try:
        for i in range(20):
            await log.append(cash_sale(receipt=f"R{i}"))
        in_wal, _ = _frames(db)
        assert in_wal > 0  # the sales are in the WAL, not yet all in the file
        async with asyncio.timeout(10):
            while (frames := _frames(db))[1] < frames[0]:
                await asyncio.sleep(0.05)
        assert log._wal.checkpoints >= 1
    finally:
        await log.close()
