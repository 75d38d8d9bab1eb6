"""Database paths with URI syntax in them (`#`, `?`, `%`) name exactly that file.

`open_sync` opens through a `file:` URI; unquoted, `we#ird/log.db` named the file
`we` (created empty) and `a?b.db` the file `a` with a query string.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from core.errors import StorageError
from core.sqlite import file_uri, open_sync

NAMES = ["we#ird/log.db", "a?b/t2.db", "100%/x%41y.db", "sp ace/q?mode=rw#x.db"]


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", NAMES)
def test_a_writer_creates_exactly_the_named_file(tmp_path: Path, name: str) -> None:
    db = tmp_path / name
    db.parent.mkdir()
    with closing(open_sync(db)) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
        conn.execute("INSERT INTO t VALUES (42)")
    assert files_under(tmp_path) == sorted([str(db.parent.relative_to(tmp_path)), name])
    with closing(sqlite3.connect(db)) as plain:  # no URI: the literal file name
        assert plain.execute("SELECT x FROM t").fetchall() == [(42,)]


@pytest.mark.parametrize("name", NAMES)
def test_a_reader_reads_the_named_file_and_creates_nothing(tmp_path: Path, name: str) -> None:
    db = tmp_path / name
    db.parent.mkdir()
    with closing(sqlite3.connect(db)) as plain:
        plain.execute("CREATE TABLE t (x INTEGER)")
        plain.execute("INSERT INTO t VALUES (7)")
        plain.commit()
    before = files_under(tmp_path)
    with closing(open_sync(db, readonly=True)) as conn:
        assert conn.execute("SELECT x FROM t").fetchall() == [(7,)]
    assert files_under(tmp_path) == before


def test_a_missing_file_with_a_hash_in_its_folder_is_not_created(tmp_path: Path) -> None:
    (tmp_path / "we#ird").mkdir()
    with pytest.raises(StorageError, match="no such database"):
        open_sync(tmp_path / "we#ird" / "log.db", readonly=True)
    assert files_under(tmp_path) == ["we#ird"]


def test_file_uri_quotes_the_path_and_encodes_the_query(tmp_path: Path) -> None:
    uri = file_uri(tmp_path / "a#b?c%d.db", mode="ro", immutable="1")
    assert uri.startswith("file:///") and uri.endswith("/a%23b%3Fc%25d.db?mode=ro&immutable=1")
