"""The ops writers refuse a running replica (issue 12: `log import` into a running
s1/t3 left its version vector behind its file until restart). Reads stay allowed.

The till runs as a real process; every writer is the real CLI in a subprocess, as on
call, and the till sells on unharmed afterwards.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import TILLMESH, Mesh
from tests.replicas.lifecycle_kit import TILL


def tillmesh(*args: object) -> subprocess.CompletedProcess[str]:
    argv = [*TILLMESH, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
async def live_db(one_till: Mesh) -> Path:
    await one_till.sell(TILL, 3)
    return one_till.site.data_dir(one_till.root, TILL) / "log.db"


async def test_writers_refuse_a_running_replica(
    one_till: Mesh, live_db: Path, tmp_path: Path
) -> None:
    usb = tmp_path / "t1.tmx"
    assert tillmesh("log", "export", live_db, "--out", usb).returncode == 0  # reads are fine
    writers = {
        "import": ("log", "import", usb, live_db),
        "rebuild": ("log", "rebuild", live_db),
        "compact": ("log", "compact", live_db, "--peers-vv", live_db),
    }
    for name, argv in writers.items():
        done = tillmesh(*argv)
        assert done.returncode == 2, (name, done.stdout, done.stderr)
        assert "the replica is running" in done.stderr, (name, done.stderr)
    status = await one_till[TILL].status(digest=False)
    assert status["version_vector"] == {TILL: 3}
    await one_till.sell(TILL, 1)  # and it sells on
