"""Appends sales as fast as it can and prints each acknowledged (origin, seq).

Run as a subprocess by test_crash.py, which SIGKILLs it at random moments. A line is
printed only after `append` returned, i.e. after the event is durable.
"""

from __future__ import annotations

import asyncio
import sys

from conflict.state import StoreState
from core.log import EventLog
from tests.factories import cash_sale

CONCURRENT_APPENDERS = 8


async def appender(log: EventLog, worker: int) -> None:
    n = 0
    while True:
        n += 1
        ev = await log.append(cash_sale(sku=f"SKU-{n % 17}", receipt=f"W{worker}-{n}"))
        sys.stdout.write(f"ACK {ev.origin} {ev.seq}\n")
        sys.stdout.flush()


async def main(path: str) -> None:
    log = await EventLog.open(path, "s1/t1", StoreState())
    sys.stdout.write(f"OPEN {log.head('s1/t1')[0]}\n")
    sys.stdout.flush()
    await asyncio.gather(*[appender(log, w) for w in range(CONCURRENT_APPENDERS)])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
