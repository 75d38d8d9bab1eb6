"""Fixtures for end-to-end tests: a site of real `tillmesh` processes, always reaped.

`soak` tests (longer partitions, more traffic) run only when asked for with `-m soak`
(`make soak`); the default run keeps tests/e2e within a few minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import Mesh


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long end-to-end runs, only with -m soak")
    config.addinivalue_line("markers", "bench: benchmarks printing figures, only with -m bench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "soak" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: run with -m soak (make soak)")
    for item in items:
        if "soak" in item.keywords and "e2e" in item.nodeid:
            item.add_marker(skip)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """Store s1 with tills t1..t3 and HQ, all started fresh and serving."""
    m = Mesh(tmp_path, {"s1": ["t1", "t2", "t3"]})
    try:
        await m.start()
        yield m
    finally:
        left = await m.close()
        pids = [p.pid for proc in m.procs.values() for p in proc.tree()]
        assert not left and not [p for p in pids if psutil.pid_exists(p)], (
            f"processes left running: {left} {pids}"
        )
