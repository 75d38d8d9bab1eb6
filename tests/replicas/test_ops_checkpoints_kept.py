"""Checkpoints nobody asked for: a running replica takes them of its own log (a child
`tillmesh log checkpoint` process, `ops.keeper`), and `--keep` thins them to a few
spread over the history; a replay from what is kept equals one from the start."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import psutil
import pytest

from replicas.ops.checkpoints import list_checkpoints
from replicas.ops.common import open_log, scope_of, scratch_state
from replicas.ops.keeper import CheckpointKeeper, KeepCheckpoints
from replicas.runtime import Replica
from tests.conflict.factory import assert_oversell_kept
from tests.e2e.harness import wait_until
from tests.factories import cash_sale
from tests.replicas.lifecycle_kit import TILL, InProcess
from tests.replicas.ops_kit import Built, at, cli, cli_json, reference_digest


def _replay(capsys: pytest.CaptureFixture[str], db: Path) -> dict[str, Any]:
    code, out = cli_json(capsys, "log", "replay", db, "--until", at(60), "--state-only")
    assert code == 0
    return out


def test_keep_thins_to_a_few_spread_over_the_history_and_replays_agree(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    whole = _replay(capsys, db)
    _, every = cli_json(capsys, "log", "checkpoint", db, "--every", "2")
    written = every["written"]
    assert len(written) >= 8, written  # enough to thin
    _, kept = cli_json(capsys, "log", "checkpoint", db, "--every", "2", "--keep", "3")
    events = [c["events"] for c in kept["checkpoints"]]
    assert len(events) == 3 and events[-1] == written[-1]  # the newest stays: runs go on
    gaps = [b - a for a, b in zip([0, *events], events, strict=False)]
    assert max(gaps) <= 2 * min(gaps) + 2, events  # spread, not bunched at one end
    assert len(list(db.with_name(db.name + ".checkpoints").glob("ck-*.db"))) == 3
    resumed = _replay(capsys, db)
    assert resumed["checkpoint"] == events[-1]
    assert resumed["state"] == whole["state"]
    assert whole["state"]["digest"] == reference_digest(built.root, db, "", ())


def test_the_keeper_takes_one_once_enough_events_came(built: Built) -> None:
    db = built.db("s1/t1")
    total = sum(c.events for c in list_checkpoints(db)[-1:])  # none yet
    assert total == 0
    config = KeepCheckpoints(every=4, keep=2, look_every_s=0.05)
    keeper = CheckpointKeeper(db, lambda: 3, config)
    assert not keeper.due()  # 3 events past nothing: not yet
    keeper = CheckpointKeeper(db, lambda: 4, config)
    assert keeper.due()
    assert asyncio.run(keeper.take())
    kept = list_checkpoints(db)
    assert 0 < len(kept) <= 2 and keeper.taken == 1


async def test_a_running_till_checkpoints_its_own_log(in_process: InProcess) -> None:
    """No operator step: the till sells, and checkpoints appear beside its log, at most
    `keep` of them; its child process is gone once the till stops."""
    config = KeepCheckpoints(every=20, keep=2, look_every_s=0.1)
    till = Replica(in_process.site, TILL, in_process.root, fresh=True, checkpoints=config)
    await till.start()
    in_process.replicas.append(till)
    assert till.server is not None
    in_process.server_pids.append(till.server.pid)
    db = in_process.site.data_dir(in_process.root, TILL) / "log.db"
    for batch in range(3):
        await till.log.append_many([cash_sale(receipt=f"K{batch}-{i}") for i in range(25)])
        events = sum(till.log.version_vector().values())

        async def caught_up(want: int = events) -> bool:
            newest = list_checkpoints(db)[-1:]
            return bool(newest) and want - newest[0].events < config.every

        await wait_until(caught_up, f"a checkpoint within {config.every} of {events}", 60)
        await wait_until(_no_child, "the checkpoint child done (pruned too)", 60)
    assert 1 <= len(list_checkpoints(db)) <= config.keep
    assert till.keeper is not None and till.keeper.taken >= 2
    await till.log.append_many([cash_sale(receipt=f"L{i}") for i in range(25)])
    await wait_until(_a_child, "a checkpoint child folding", 30, every=0.01)  # then stop
    await till.stop()
    in_process.replicas.remove(till)
    assert await _no_child(), "a checkpoint child outlived its till"


def _children() -> list[int]:
    found = []
    for c in psutil.Process().children(recursive=True):
        try:
            if "checkpoint" in c.cmdline():
                found.append(c.pid)
        except psutil.NoSuchProcess:
            pass  # exited between the listing and the look
    return found


async def _no_child() -> bool:
    return not _children()


async def _a_child() -> bool:
    return bool(_children())


def test_states_folded_from_a_snapshot_keep_their_oversell_runs(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runs the fold keeps are not snapshotted: a replay's scratch state and the
    checkpoints of a compacted log derive them from the snapshot's stock."""
    t2 = built.db("s1/t2")
    code, _, _ = cli(capsys, "log", "compact", t2, "--peers-vv", built.db("hq"), built.db("s1/t1"))
    assert code == 0
    _, out = cli_json(capsys, "log", "checkpoint", t2, "--every", "4")
    with closing(open_log(t2)) as conn:
        scratch = scratch_state(conn, scope_of(None))
    states = [scratch, *(sqlite3.connect(c.path) for c in list_checkpoints(t2))]
    assert len(states) > 1 and out["written"]
    for state in states:
        try:
            assert_oversell_kept(state)
        finally:
            state.close()
