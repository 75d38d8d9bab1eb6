"""`open_sync(readonly=True)` on a database in a folder the reader cannot write.

A WAL reader creates `-shm`/`-wal` beside the file, so a read-only folder (a mount,
another user's data dir) used to fail with "attempt to write a readonly database".
Root writes anywhere, so these tests drop to an unprivileged user (`setpriv`) in a
subprocess; the folder is really 0555 for it.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from core.sqlite import open_sync
from tests.unprivileged import run_unprivileged


def make_wal_db(path: Path, rows: int) -> None:
    """A closed WAL database (SQLite removes -wal and -shm at the last close)."""
    with closing(open_sync(path)) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(rows)])
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def read_as_nobody(db: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "from core.sqlite import open_sync\n"
        f"conn = open_sync({str(db)!r}, readonly=True)\n"
        "print(conn.execute('SELECT count(*) FROM t').fetchone()[0])\n"
    )
    return run_unprivileged(code, db.parent.parent)


def test_a_wal_database_in_a_read_only_folder_is_read(shared_dir: Path) -> None:
    folder = shared_dir / "ro"
    folder.mkdir()
    make_wal_db(folder / "log.db", 7)
    folder.chmod(0o555)
    (folder / "log.db").chmod(0o444)
    result = read_as_nobody(folder / "log.db")
    assert (result.returncode, result.stdout, result.stderr) == (0, "7\n", "")
    assert sorted(p.name for p in folder.iterdir()) == ["log.db"]


@pytest.mark.parametrize("via_symlink", [False, True])
def test_uncheckpointed_commits_are_refused_not_silently_skipped(
    shared_dir: Path, via_symlink: bool
) -> None:
    """A copied db + -wal: immutable=1 would ignore the -wal and read stale data (also
    when opened through a symlink: the -wal is beside the file it names)."""
    live, folder = shared_dir / "live", shared_dir / "ro"
    live.mkdir()
    folder.mkdir()
    make_wal_db(live / "log.db", 3)
    with closing(open_sync(live / "log.db")) as writer:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO t VALUES (99)")  # only in the -wal
        for suffix in ("", "-wal"):
            shutil.copy(live / f"log.db{suffix}", folder / f"log.db{suffix}")
    folder.chmod(0o555)
    db = folder / "log.db"
    if via_symlink:
        db = shared_dir / "link.db"
        db.symlink_to(folder / "log.db")
    result = read_as_nobody(db)
    assert result.returncode != 0 and result.stdout == ""
    assert "write-ahead log (-wal)" in result.stderr and "copy the file" in result.stderr


def test_a_live_writer_s_commits_are_read_through_its_shm(shared_dir: Path) -> None:
    """A writer running in the folder: mode=ro reads its -wal, no immutable fallback."""
    folder = shared_dir / "live"
    folder.mkdir()
    make_wal_db(folder / "log.db", 3)
    with closing(open_sync(folder / "log.db")) as writer:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO t VALUES (99)")  # committed, in the -wal only
        for part in folder.glob("log.db*"):  # a log is its owner's alone (0600) unless
            part.chmod(0o644)  # an admin lets others read it, as here the ops user
        folder.chmod(0o555)
        result = read_as_nobody(folder / "log.db")
        folder.chmod(0o755)
    assert (result.returncode, result.stdout, result.stderr) == (0, "4\n", "")


def test_a_writable_folder_still_uses_a_plain_read_only_open(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    make_wal_db(db, 2)
    with closing(open_sync(db, readonly=True)) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            conn.execute("INSERT INTO t VALUES (1)")
