"""The till log of a year's sales that the benchmarks share: 1,000,000 cash sales of 500
SKUs appended by s1/t1 (`TILLMESH_BENCH_EVENTS` for fewer), built once per session.

Building takes about half a minute; the restart benchmark copies it (it appends), the
ops benchmark reads it and writes only beside it (checkpoints, kept conflicts).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from conflict.state import StoreState
from core.log import EventLog
from tests.factories import cash_sale

__all__ = ["BENCH_EVENTS", "append_sales", "build_till_log"]

BENCH_EVENTS = int(os.environ.get("TILLMESH_BENCH_EVENTS", "1000000"))
_PER_COMMIT = 5000


async def append_sales(db: Path, n: int) -> None:
    log = await EventLog.open(db, "s1/t1", StoreState())
    try:
        for i in range(0, n, _PER_COMMIT):
            await log.append_many(
                [cash_sale(sku=f"SKU-{j % 500}", receipt=f"R{i + j}") for j in range(_PER_COMMIT)]
            )
    finally:
        await log.close()


def build_till_log(db: Path, n: int = BENCH_EVENTS) -> Path:
    """s1/t1's log with `n` sales (a multiple of 5,000) at `db`."""
    asyncio.run(append_sales(db, n))
    return db
