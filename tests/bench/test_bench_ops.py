"""Issue 20 benchmark: every on-call command on the 1M-event till log, each timed as the
person on call runs it (a `tillmesh` process, start-up included), beside `log stats`
of the same run as the baseline. Target: each <= 5 s on this machine.

Printed per command: wall seconds, CPU seconds of the process (the machine is shared:
wall time carries the other work running, CPU time does not) and wall as a multiple of
the baseline's.

No operator step comes before the replays: the checkpoints they start from are those a
running till takes of its own log (`ops.keeper`: a low-priority `log checkpoint --keep`
child every 100,000 events), taken here once over the whole year by the keeper itself.
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from replicas.cli.common import format_hlc
from replicas.ops.checkpoints import DEFAULT_EVERY
from replicas.ops.keeper import CheckpointKeeper, KeepCheckpoints
from tests.bench.conftest import table

pytestmark = pytest.mark.bench
ROOT = Path(__file__).resolve().parents[2]


def timed(*argv: object) -> tuple[float, float, str]:
    """(wall s, CPU s, stdout) of one `tillmesh` process; it must succeed (exit 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "replicas.cli.main", *map(str, argv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0, done.stderr[-2000:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done.stdout


def kept_by_the_till(db: Path, events: int, every: int) -> tuple[float, float]:
    """(wall s, CPU s) of the checkpoints the till's keeper takes of `db` (its child)."""
    keeper = CheckpointKeeper(db, lambda: events, KeepCheckpoints(every=every))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    assert keeper.due() and asyncio.run(keeper.take())
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def hlc_of(db: Path, seq: int) -> int:
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT hlc FROM events WHERE seq = ?", (seq,)).fetchone()[0])


def test_bench_on_call_commands_on_a_million_events(tmp_path: Path, till_log_1m: Path) -> None:
    db = tmp_path / "till.db"  # beside it go the checkpoints and kept conflicts
    shutil.copyfile(till_log_1m, db)
    copy = tmp_path / "copy.db"
    shutil.copyfile(db, copy)
    events = int(timed("log", "stats", db, "--json")[2].split('"events": ')[1].split(",")[0])
    middle = format_hlc(hlc_of(db, events // 2))
    rows: list[tuple[str, float, float, str]] = []

    def run(name: str, *argv: object, check: str = "") -> str:
        wall, cpu, out = timed(*argv)
        assert check in out, out[-2000:]
        rows.append((name, wall, cpu, " ".join(map(str, argv)).replace(str(tmp_path) + "/", "")))
        return out

    run("log stats (baseline)", "log", "stats", db)
    digest = run("state --digest", "state", db, "--digest").strip()
    run("state --digest --recompute", "state", db, "--recompute", check=digest)
    run("log diff, itself", "log", "diff", db, db, check="SAME")
    run("log diff, an equal copy", "log", "diff", db, copy, check="SAME")
    run("conflicts, first time", "conflicts", db, check="conflict(s)")
    run("conflicts, again", "conflicts", db, check="conflict(s)")
    every = min(DEFAULT_EVERY, max(events // 5, 5000))  # the default, on a 1M log
    wall, cpu = kept_by_the_till(db, events, every)
    rows.append(("the till's own checkpoints", wall, cpu, f"keeper child, every {every:,}"))
    run("log replay to the middle", "log", "replay", db, "--store", "s1", "--until", middle,
        check="from the checkpoint")  # fmt: skip
    run("log replay to 2099", "log", "replay", db, "--store", "s1", "--until", "2099-01-01",
        check=f": {events} events")  # fmt: skip
    base = rows[0][1]
    table(
        f"on-call commands on a till log of {events:,} events (wall / CPU s; x baseline)",
        [(name, f"{wall:6.2f} / {cpu:5.2f} s", f"{wall / base:5.1f}x  {cmd}")
         for name, wall, cpu, cmd in rows],
    )  # fmt: skip
