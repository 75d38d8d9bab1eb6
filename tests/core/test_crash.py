"""Crash safety: SIGKILL an appending process at random moments; nothing acknowledged is lost.

The set of acknowledged seqs is the oracle. After every kill the database must hold
each of them, pass `PRAGMA integrity_check`, verify (hash chains, contiguity,
canonical encoding) and keep a state digest equal to the one recomputed from its rows.
Kill points are drawn by Hypothesis-free seeded choice of how many acknowledgements to
wait for, so a failure names its cycle and is replayable.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conflict import queries
from core.verify import verify_log
from replicas.cli.main import main as cli_main
from tests.conflict.factory import assert_oversell_kept

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0


def run_until_killed(db: Path, acks_wanted: int) -> tuple[int, set[int]]:
    """Start the appender, SIGKILL it after `acks_wanted` acks; return (start head, acked seqs)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.core.crash_appender", str(db)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acked: set[int] = set()
    try:
        start_head = _read_open_line(proc)
        deadline = time.monotonic() + START_TIMEOUT
        while len(acked) < acks_wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            acked.add(int(line.split()[2]))
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=10)
    acked.update(int(line.split()[2]) for line in rest.splitlines() if line.startswith("ACK"))
    assert proc.returncode == -signal.SIGKILL, err
    return start_head, acked


def _read_open_line(proc: subprocess.Popen[str]) -> int:
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if not line.startswith("OPEN"):
        proc.kill()
        raise AssertionError(f"appender did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
    return int(line.split()[1])


def check_database(db: Path, acked: set[int]) -> None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {seq for (seq,) in conn.execute("SELECT seq FROM events WHERE origin='s1/t1'")}
        assert acked <= stored, f"lost acknowledged events: {sorted(acked - stored)[:10]}"
        report = verify_log(conn)
        assert report.ok, [str(f) for f in report.defects]
        # the kept digest committed with the fold or not at all: it is the rows' digest
        assert queries.state_digest(conn) == queries.state_digest(conn, recompute=True)
        assert_oversell_kept(conn)  # the runs the fold keeps committed with it too
    finally:
        conn.close()


def crash_cycles(tmp_path: Path, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    all_acked: set[int] = set()
    for cycle in range(cycles):
        start_head, acked = run_until_killed(db, acks_wanted=rng.randint(1, 300))
        assert start_head >= max(all_acked, default=0), f"cycle {cycle}: head went backwards"
        all_acked |= acked
        check_database(db, all_acked)
    assert cli_main(["log", "verify", "--quiet", str(db)]) == 0
    assert len(all_acked) >= cycles


def test_no_acknowledged_append_is_lost_across_sigkill(tmp_path):
    crash_cycles(tmp_path, cycles=50, seed=1)


@pytest.mark.soak
def test_no_acknowledged_append_is_lost_across_many_sigkills(tmp_path):
    crash_cycles(tmp_path, cycles=500, seed=7)
