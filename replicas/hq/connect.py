"""Telling a PostgreSQL DSN from a log path, read-only connections for reports, and a
DSN fit for messages (no password)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from core.errors import StorageError

__all__ = [
    "NO_JIT", "READ_ONLY", "connect_readonly", "is_postgres", "open_readonly", "redact",
    "with_options",
]  # fmt: skip


def is_postgres(where: object) -> bool:
    """Whether `where` (a CLI argument) names a PostgreSQL database, not a log file."""
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info.pop("password", None)
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


# HQ's own reads run without JIT: on tables not yet analysed (a new HQ, a big ingest
# autovacuum has not reached) the planner prices the stock view over `jit_above_cost`
# and LLVM spends ~1.1 s compiling it for a query that runs in ~4 ms (measured, EXPLAIN
# ANALYZE). BI tools' own sessions keep the server's setting.
NO_JIT = "-c jit=off"
READ_ONLY = f"-c default_transaction_read_only=on {NO_JIT}"


def with_options(dsn: str, extra: str) -> str:
    """The server options for a connection to `dsn`: the DSN's own (or PGOPTIONS's,
    which an `options` given to connect would replace) and then `extra`, so a site's
    search_path or statement_timeout is kept."""
    given = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or os.environ.get("PGOPTIONS", "")
    return f"{given} {extra}".strip()


def connect_readonly(dsn: str, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection of HQ's own reads: its transactions cannot write, no JIT, the DSN's
    own options kept."""
    return psycopg.connect(dsn, options=with_options(dsn, READ_ONLY), autocommit=autocommit)


@contextmanager
def open_readonly(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose transactions cannot write (a report never changes HQ)."""
    try:
        conn = connect_readonly(dsn)
    except psycopg.Error as e:
        raise StorageError(redact(dsn), str(e).strip()) from e
    with conn:
        try:
            conn.execute("SELECT 1 FROM hq_schema")
        except psycopg.Error as e:
            raise StorageError(redact(dsn), "not a tillmesh HQ database (no hq_schema)") from e
        yield conn
