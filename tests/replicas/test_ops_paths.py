"""Ops commands on databases whose paths hold URI syntax (`#`, `?`, `%`): the named file
is used and nothing is created beside it (unquoted, `we#ird/log.db` opened a new `we`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.replicas.ops_kit import Built, cli


def files_under(root: Path) -> list[str]:
    """Files and folders, not counting a database's own -wal/-shm (SQLite's, made by a
    read-only connection, which cannot remove them at close)."""
    found = {str(p.relative_to(root)) for p in root.rglob("*")}
    sidecars = {f for f in found if f.endswith(("-wal", "-shm")) and f[:-4] in found}
    return sorted(found - sidecars)


@pytest.mark.parametrize("folder", ["we#ird", "a?b", "50%off"])
def test_read_and_write_commands_use_the_named_file(
    built: Built, tmp_path: Path, folder: str, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    (work / folder).mkdir(parents=True)
    t1, t2 = work / folder / "t1.db", work / folder / "t2.db"
    shutil.copy(built.db("s1/t1"), t1)
    shutil.copy(built.db("s1/t2"), t2)
    before = files_under(work)
    code, out, err = cli(capsys, "log", "stats", t1)
    assert (code, err) == (0, "") and "s1/t1" in out
    code, out, err = cli(capsys, "log", "diff", t1, t2)
    assert (code, err) == (0, "") and out.splitlines()[-1] == "SAME"
    code, out, err = cli(capsys, "log", "rebuild", t2)
    assert (code, err) == (0, "") and "(unchanged)" in out
    assert files_under(work) == before
