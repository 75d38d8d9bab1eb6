"""HQ's own reads on PostgreSQL run without JIT (`replicas.hq.connect.NO_JIT`): on tables
not yet analysed, the planner prices the stock view over `jit_above_cost` and LLVM
compiled it for ~1.1 s on every report, for a query of milliseconds."""

from __future__ import annotations

import psycopg

from replicas.hq.api import PgReads
from replicas.hq.connect import open_readonly
from replicas.hq.store import PgLog


def _with_server_default(dsn: str) -> None:
    """The tests' databases have JIT off (tests/conftest.py): back to the server's."""
    name = dsn.rsplit("/", 1)[1]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} RESET jit".encode())
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("on",)  # a BI tool's session


async def test_hq_reads_its_database_without_jit(pg_dsn: str) -> None:
    _with_server_default(pg_dsn)
    log = await PgLog.open(pg_dsn, "hq")
    reads = PgReads(pg_dsn)
    try:
        with open_readonly(pg_dsn) as cli:  # `tillmesh report` / `conflicts` on a DSN
            assert cli.execute("SHOW jit").fetchone() == ("off",)
        assert await reads.read(lambda c: c.execute("SHOW jit").fetchone()) == ("off",)
        shown = await log.reader.execute("SHOW jit")
        assert await shown.fetchone() == ("off",)
    finally:
        reads.close()
        await log.close()


async def test_hq_reads_keep_what_the_sites_dsn_sets(pg_dsn: str) -> None:
    """JIT off is added to the DSN's own server options, not put in their place (found
    in review: the reader dropped a site's statement_timeout)."""
    dsn = pg_dsn + "?options=-c%20statement_timeout%3D4321"
    log = await PgLog.open(dsn, "hq")
    reads = PgReads(dsn)
    try:
        writer = await (await log.conn.execute("SHOW statement_timeout")).fetchone()
        reader = await (await log.reader.execute("SHOW statement_timeout")).fetchone()
        assert writer == reader == ("4321ms",)
        shown = await reads.read(lambda c: c.execute("SHOW statement_timeout").fetchone())
        assert shown == ("4321ms",)
        with open_readonly(dsn) as cli:
            assert cli.execute("SHOW statement_timeout").fetchone() == ("4321ms",)
            assert cli.execute("SHOW jit").fetchone() == ("off",)
    finally:
        reads.close()
        await log.close()
