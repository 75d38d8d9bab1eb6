"""A real PostgreSQL for HQ's tests: one server a session (Debian's postgresql-15,
initdb into a temp folder, run as the `postgres` user on a free port, stopped by its
pid), and a fresh database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from replicas.hq.cluster import LocalPostgres, postgres_missing

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="tillmesh-pg-"))
    root.chmod(0o755)  # the postgres user must reach its data folder
    try:
        with LocalPostgres(root / "pg") as pg:
            yield pg
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(postgres: LocalPostgres) -> Iterator[str]:
    """A DSN of a database of its own, dropped after the test."""
    name = f"t{os.getpid()}_{next(_names)}"
    admin = postgres.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())
