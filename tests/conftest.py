"""Fixtures every test folder may use (a real PostgreSQL for HQ on it among them)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from replicas.demo.netlab.network import Network, netns_unavailable
from replicas.demo.netlab.runs import remove_stale
from replicas.hq.cluster import LocalPostgres, postgres_missing
from tests.acquirer_kit import AcquirerProc
from tests.browser_kit import CHROMIUM
from tests.unprivileged import run_unprivileged


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: `make system-deps` installs it (make test does)")
    return CHROMIUM


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder the unprivileged user can enter (pytest's tmp_path is 0700 root's)."""
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable")
    root = Path(tempfile.mkdtemp(prefix="tillmesh-ro-"))
    root.chmod(0o755)
    probe = run_unprivileged("import core, conflict, broker, replicas", root)
    if probe.returncode != 0:
        shutil.rmtree(root)
        pytest.skip(f"the unprivileged user cannot run this checkout: {probe.stderr[-200:]}")
    try:
        yield root
    finally:
        for path in root.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(root)


@pytest.fixture(scope="session")
def netns_ready() -> list[str]:
    """Skips (with the reason) unless this machine can run the emulated network
    (replicas/demo/netlab/): root, `ip`, namespaces, bridges, veths. Once a session, removes
    what killed runs of the lab left behind; returns what it removed."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")
    return remove_stale()


@pytest.fixture
def netns(netns_ready: list[str]) -> Iterator[Network]:
    """An open `Network` (replicas/demo/netlab/) with nothing in it yet; at teardown every process
    in it is stopped and every namespace removed, and a leftover fails the test."""
    with Network() as net:
        yield net


_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL a session (Debian's postgresql-15, initdb into a temp folder,
    run as the `postgres` user on a free port, stopped by its pid); skips where missing."""
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
    """A DSN of a database of its own, dropped after the test. JIT is off in it: on the
    tests' few rows the planner's guesses for unanalysed tables price HQ's stock view
    over `jit_above_cost`, and LLVM then spends ~0.5 s compiling every stock report
    (nine tenths of each SQLite-vs-PostgreSQL comparison) for a query that runs in
    milliseconds; JIT changes no result. Benches make their own databases."""
    name = f"t{os.getpid()}_{next(_names)}"
    admin = postgres.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
        conn.execute(f"ALTER DATABASE {name} SET jit = off".encode())
    yield postgres.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)".encode())


@pytest.fixture
async def acquirer(tmp_path: Path) -> AsyncIterator[AcquirerProc]:
    """The card acquirer as a real process, declining tokens holding "decline", answering
    tokens holding "slow" after 5 s; stopped by its PID at teardown."""
    proc = AcquirerProc(tmp_path / "acquirer", "--decline-tokens", "decline",
                        "--slow-tokens", "slow", "--slow-s", "5")  # fmt: skip
    try:
        await proc.start()
        yield proc
    finally:
        proc.stop()
