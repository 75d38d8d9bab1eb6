"""`log restore`: a replacement till from HQ's or a peer's database keeps its id and seq."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conflict.state import StoreState
from core.log import EventLog
from replicas.cli.main import main
from tests.replicas.ops_kit import Built, Site, cli, cli_json, digest, sale, with_site


def sync_all(built: Built, *rids: str) -> None:
    async def go(site: Site) -> None:
        await site.open(*rids)
        await site.sync(*rids)

    with_site(built.root, go)


def next_append(root: Path, rid: str) -> str:
    async def go(site: Site) -> str:
        await site.open(rid)
        return (await site.append(rid, sale("AFTER-RESTORE")))[0]

    return with_site(root, go)


def test_restore_from_hq_keeps_identity_and_sequence(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_all(built, "hq", "s1/t1", "s1/t2")
    lost = built.db("s1/t1")
    lost.unlink()  # the till's disk died
    code, out = cli_json(
        capsys, "log", "restore", lost, "--from", built.db("hq"), "--replica", "s1/t1"
    )
    assert code == 0 and out["own_seq"] == 16 and out["rejected"] == []
    assert out["digest"] == digest(lost) == digest(built.db("s1/t2"))  # store s1's state only
    code, diff = cli_json(capsys, "log", "diff", lost, built.db("s1/t2"))
    assert code == 0 and not diff["differs"]
    assert next_append(built.root, "s1/t1") == "s1/t1:17"


def test_restore_refuses_to_overwrite_without_force(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    t1 = built.db("s1/t1")
    before = digest(t1)
    argv = ["log", "restore", t1, "--from", built.db("s1/t2"), "--replica", "s1/t1"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "--force" in err and err.count("\n") == 1
    assert digest(t1) == before
    code, text, _ = cli(capsys, *argv, "--force")
    assert code == 0 and "next append is s1/t1:17" in text
    assert digest(t1) == digest(built.db("s1/t2"))
    kept = t1.with_name(t1.name + ".replaced-1")  # the replaced log is kept, not deleted
    assert f"kept in {kept}" in text and digest(kept / t1.name) == before


def test_restore_refuses_a_wal_left_behind_by_a_moved_database(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mv t1.db t1.db.dead` leaves t1.db-wal, which may hold the dead till's last sales;
    restore deleted it without a word."""
    t1 = built.db("s1/t1")
    wal = t1.with_name(t1.name + "-wal")
    wal.write_bytes(b"commits of the moved database")
    t1.rename(t1.with_name(t1.name + ".dead"))
    argv = ["log", "restore", t1, "--from", built.db("hq"), "--replica", "s1/t1"]
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "holds commits of a database that is not here" in err
    assert wal.read_bytes() == b"commits of the moved database" and not t1.exists()


def test_restore_from_another_stores_till_is_refused(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    new = built.root / "new.db"
    code, _, err = cli(
        capsys, "log", "restore", new, "--from", built.db("s2/x1"), "--replica", "s1/t1"
    )
    assert code == 2 and "holds less than 's1/t1'" in err
    assert not new.exists()


def test_restore_from_a_compacted_peer_starts_from_its_snapshot(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_all(built, "hq", "s1/t1", "s1/t2")
    t2 = built.db("s1/t2")
    cli(capsys, "log", "compact", t2, "--peers-vv", built.db("hq"), built.db("s1/t1"))
    lost = built.db("s1/t1")
    lost.unlink()
    code, out = cli_json(capsys, "log", "restore", lost, "--from", t2, "--replica", "s1/t1")
    assert code == 0 and out["seeded"] == {"hq": 1, "s1/t1": 15, "s1/t2": 13}
    assert out["own_seq"] == 16 and digest(lost) == digest(t2)
    code, _, _ = cli(capsys, "log", "verify", lost)
    assert code == 0
    assert next_append(built.root, "s1/t1") == "s1/t1:17"
    code, rebuilt = cli_json(capsys, "log", "rebuild", lost)
    assert rebuilt["digest"] == rebuilt["digest_before"]


@pytest.mark.parametrize("source", ["hq", "s1/t2"])
def test_restore_leaves_only_the_restored_file(
    built: Built, tmp_path: Path, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the main file is moved into place: no <db>.restoring-wal/-shm beside it."""
    out_dir = tmp_path / "new"
    out_dir.mkdir()
    new = out_dir / "t1.db"
    code, _, err = cli(
        capsys, "log", "restore", new, "--from", built.db(source), "--replica", "s1/t1"
    )
    assert (code, err) == (0, "")
    assert sorted(p.name for p in out_dir.iterdir()) == ["t1.db"]


async def test_restore_force_refuses_a_running_replica(built: Built, tmp_path: Path) -> None:
    """--force moved a live till's open log aside, and the till went on selling into it."""
    t1 = built.db("s1/t1")
    before = digest(t1)
    log = await EventLog.open(t1, "s1/t1", StoreState())  # the till, running
    try:
        argv = ["log", "restore", str(t1), "--from", str(built.db("hq")), "--replica", "s1/t1",
                "--force"]  # fmt: skip
        code = await asyncio.to_thread(main, argv)
    finally:
        await log.close()
    assert code == 2 and digest(t1) == before
    assert not t1.with_name(t1.name + ".replaced-1").exists()
