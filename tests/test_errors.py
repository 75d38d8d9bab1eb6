"""One error tree, and no raw sqlite3 or NATS error escaping a public call.

As httpx tests its exception mapping: every lower-layer error a public call can meet
comes out as a `TillmeshError` (or is handled where it arises), with the original
attached as `__cause__`. NATS errors on a dead link: `test_protocol_transport.py`.
"""

from __future__ import annotations

import inspect
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import httpx
import msgspec
import nats.errors
import pydantic
import pytest

import conflict.errors
import core.errors
import replicas.errors
from core.errors import StorageError, TillmeshError
from core.fold import Accepted
from core.log import EventLog
from core.sqlite import translate
from tests.core.folds import CountingFold
from tests.factories import cash_sale

ERROR_MODULES = (core.errors, conflict.errors, replicas.errors)


def _tillmesh_errors() -> dict[str, type[BaseException]]:
    return {
        name: obj
        for module in ERROR_MODULES
        for name in module.__all__
        if inspect.isclass(obj := getattr(module, name))
    }


def test_every_error_is_in_the_one_tree() -> None:
    errors = _tillmesh_errors()
    assert len(errors) > 25
    assert all(issubclass(cls, TillmeshError) for cls in errors.values())


def test_no_error_name_clashes_with_a_library_underneath() -> None:
    libraries = (sqlite3, pydantic, httpx, nats.errors, msgspec)
    clashes = {
        name: lib.__name__ for name in _tillmesh_errors() for lib in libraries if hasattr(lib, name)
    }
    # DecodeError predates this rule; msgspec's is always caught and re-raised as ours.
    assert clashes == {"DecodeError": "msgspec"}


@pytest.mark.parametrize(
    "cls",
    [c for c in vars(sqlite3).values() if inspect.isclass(c) and issubclass(c, sqlite3.Error)],
)
def test_every_sqlite3_error_translates_to_a_storage_error(cls: type[sqlite3.Error]) -> None:
    assert isinstance(translate("x.db", cls("database is locked")), StorageError)
    assert isinstance(translate("x.db", cls("anything else")), StorageError)


class BrokenSqlFold(CountingFold):
    """A fold whose SQL fails inside the log's transaction (a bug, a damaged table)."""

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Accepted]) -> None:
        conn.execute("INSERT INTO no_such_table VALUES (1)")


async def test_sqlite_errors_in_the_log_come_out_as_storage_errors(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "e.db", "s1/t1", BrokenSqlFold())
    try:
        with pytest.raises(StorageError) as append:
            await log.append(cash_sale())
        assert isinstance(append.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(StorageError):
            await log.read(lambda c: c.execute("SELECT * FROM no_such_table").fetchall())
        assert log.version_vector() == {}  # and the log goes on: nothing half-written
    finally:
        await log.close()
