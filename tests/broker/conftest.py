"""Fixtures for broker tests: real nats-server processes, always reaped."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from tests.broker.kit import ServerPool, Site


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[ServerPool]:
    pool = ServerPool(tmp_path)
    try:
        yield pool
    finally:
        await pool.stop_all()
    # Reaped means gone: a zombie would still answer kill(pid, 0).
    leaked = [pid for pid in pool.pids if _pid_alive(pid)]
    assert not leaked, f"nats-server processes left running: {leaked}"


@pytest.fixture
async def clients() -> AsyncIterator[list[Client]]:
    """Append connections here; they are closed at teardown even if a test fails."""
    conns: list[Client] = []
    yield conns
    for nc in conns:
        if not nc.is_closed:
            await nc.close()


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """A site: CA, nkeys and seed files (see `Site`)."""
    return Site(tmp_path / "site")
