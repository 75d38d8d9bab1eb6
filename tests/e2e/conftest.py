"""Fixtures for end-to-end tests: a site of real `tillmesh` processes, always reaped.

`soak` tests (longer partitions, more traffic) are deselected by the default addopts and
run with `make soak`; the default run keeps tests/e2e within a few minutes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.harness import Mesh, running_mesh


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    """Store s1 with tills t1..t3 and HQ, all started fresh and serving."""
    async with running_mesh(tmp_path, {"s1": ["t1", "t2", "t3"]}) as m:
        yield m
