"""Fixtures of the replica tests: the ops tests' store day (built once, copied per
test) and sites of real or in-process replicas, each stopped by PID at teardown."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import Mesh
from tests.replicas.lifecycle_kit import TILL, InProcess
from tests.replicas.ops_kit import Built, store_day, with_site


@pytest.fixture(scope="session")
def pristine_site(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("pristine")
    return Built(root, with_site(root, store_day))


@pytest.fixture
def built(pristine_site: Built, tmp_path: Path) -> Built:
    """A private copy of the store day's databases (the logs are closed: no WAL files)
    and of its site (site.json, the keys its logs sign with)."""
    for db in pristine_site.root.glob("*.db"):
        shutil.copy(db, tmp_path / db.name)
    shutil.copy(pristine_site.root / "site.json", tmp_path / "site.json")
    for identity in pristine_site.root.glob("**/identity"):
        shutil.copytree(identity, tmp_path / identity.relative_to(pristine_site.root))
    return Built(tmp_path, pristine_site.ids)


async def _close(mesh: Mesh) -> None:
    left = await mesh.close()
    pids = [p.pid for proc in mesh.procs.values() for p in proc.tree()]
    assert not left and not [p for p in pids if psutil.pid_exists(p)], (
        f"processes left running: {left} {pids}"
    )


@pytest.fixture
async def one_till(tmp_path: Path) -> AsyncIterator[Mesh]:
    """A site of HQ and s1/t1 with only s1/t1 running (fresh), as a real process."""
    mesh = Mesh(tmp_path, {"s1": ["t1"]})
    try:
        await mesh.start(TILL)
        yield mesh
    finally:
        await _close(mesh)


@pytest.fixture
async def no_till(tmp_path: Path) -> AsyncIterator[Mesh]:
    """The same site with nothing running; a test starts what it needs."""
    mesh = Mesh(tmp_path, {"s1": ["t1"]})
    try:
        yield mesh
    finally:
        await _close(mesh)


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[InProcess]:
    """A site of HQ and s1/t1; the test starts replicas in this process."""
    replicas = InProcess(tmp_path / "site", {"s1": ["t1"]})
    try:
        yield replicas
    finally:
        await replicas.stop_all()
