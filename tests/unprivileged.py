"""Run code as an unprivileged user (root ignores permission bits), for the tests of
read-only folders and mounts; the `shared_dir` fixture is in `tests/conftest.py`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["NOBODY", "REPO", "run_unprivileged", "unprivileged"]

REPO = Path(__file__).resolve().parents[1]


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def unprivileged(argv: Sequence[str]) -> list[str]:
    """`argv` run as a user the permission bits apply to (root ignores them)."""
    return list(argv) if os.geteuid() != 0 else [*NOBODY, *argv]


def run_unprivileged(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Python `code` as an unprivileged user, with this checkout importable."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO)}
    argv = unprivileged([sys.executable, "-c", code])
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
