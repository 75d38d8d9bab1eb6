"""asyncpg or psycopg 3 for HQ on PostgreSQL: COPY of event rows into a staging table,
then INSERT ... ON CONFLICT (origin, seq) DO NOTHING into the keyed table, in one
transaction, through each driver on the same server in the same run. Figures only.

psycopg 3 is what `replicas/hq` uses (README "HQ on PostgreSQL", dependencies); asyncpg
is not a tillmesh dependency, so its half is skipped where it is not installed.
"""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from replicas.hq.cluster import LocalPostgres
from tests.bench.conftest import table

pytestmark = pytest.mark.bench

N = 200_000
DDL = (
    "DROP TABLE IF EXISTS ev; CREATE TABLE ev (store text, origin text, seq bigint, hlc bigint,"
    " type text, hash bytea, raw bytea, PRIMARY KEY (origin, seq))"
)
COLUMNS = ["store", "origin", "seq", "hlc", "type", "hash", "raw"]
TYPES = ["text", "text", "int8", "int8", "text", "bytea", "bytea"]
Row = tuple[str, str, int, int, str, bytes, bytes]


def _rows() -> list[Row]:
    return [
        (f"s{i % 10}", f"s{i % 10}/t{i % 5}", i, 1 << 40 | i, "sale.completed",
         os.urandom(32), os.urandom(300))
        for i in range(N)
    ]  # fmt: skip


def _psycopg(dsn: str, rows: list[Row]) -> tuple[float, float]:
    with psycopg.connect(dsn) as conn:
        conn.execute(DDL.encode())
        conn.commit()
        t0 = time.perf_counter()
        with conn.transaction():
            conn.execute("CREATE TEMP TABLE st (LIKE ev) ON COMMIT DROP")
            copy_sql = f"COPY st ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
            with conn.cursor().copy(copy_sql.encode()) as copy:
                copy.set_types(TYPES)
                for row in rows:
                    copy.write_row(row)
            copied = time.perf_counter()
            conn.execute("INSERT INTO ev SELECT * FROM st ON CONFLICT DO NOTHING")
        return copied - t0, time.perf_counter() - t0


async def _asyncpg(dsn: str, rows: list[Row]) -> tuple[float, float]:
    asyncpg = pytest.importorskip("asyncpg")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DDL)
        t0 = time.perf_counter()
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE st (LIKE ev) ON COMMIT DROP")
            await conn.copy_records_to_table("st", records=rows, columns=COLUMNS)
            copied = time.perf_counter()
            await conn.execute("INSERT INTO ev SELECT * FROM st ON CONFLICT DO NOTHING")
        return copied - t0, time.perf_counter() - t0
    finally:
        await conn.close()


async def test_bench_pg_drivers(postgres: LocalPostgres) -> None:
    rows = _rows()
    results: dict[str, tuple[float, float]] = {}
    for _ in range(2):  # best of two: the machine is shared
        for name, took in (("psycopg 3", _psycopg(postgres.dsn, rows)),
                           ("asyncpg", await _asyncpg(postgres.dsn, rows))):  # fmt: skip
            best = results.get(name, (float("inf"), float("inf")))
            results[name] = (min(best[0], took[0]), min(best[1], took[1]))
    table(
        f"PostgreSQL drivers: {N:,} event rows, COPY into staging + INSERT ON CONFLICT",
        [
            (name, f"{N / copy:,.0f} rows/s", f"COPY; with the INSERT: {N / both:,.0f} rows/s")
            for name, (copy, both) in results.items()
        ],
    )
