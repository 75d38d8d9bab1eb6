"""Fixtures for end-to-end tests: a site of real `tillmesh` processes, always reaped.

`soak` tests (longer partitions, more traffic) are deselected by the default addopts and
run with `make soak`; the default run keeps tests/e2e within a few minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import Mesh


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
