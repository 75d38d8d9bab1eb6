"""Files that hold sales or secrets are the owner's alone (0600) from the first byte:
the log (`log.db`, its `-wal` and `-shm`) and every nats-server config (a till's holds
its leaf seed). They were 0644 (the log) and written 0644 then chmod-ed (the config)."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from broker.config import LeafRemoteSpec, ServerConfig, free_port
from broker.files import write_private
from broker.identity import Nkey
from broker.server import EmbeddedNatsServer
from core.log import EventLog
from tests.core.folds import CountingFold
from tests.factories import cash_sale


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def modes_while_written(path: Path) -> Iterator[list[int]]:
    """The modes `path` had, once it held data, at each file open or chmod this process
    made meanwhile, seen through Python's audit events (PEP 578): a file written
    readable and narrowed after shows its wide mode at the chmod."""
    seen: list[int] = []
    state = {"watching": True, "inside": False}

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not state["watching"] or state["inside"] or event not in ("open", "os.chmod"):
            return
        state["inside"] = True  # a stat here raises no event, but stay safe
        try:
            if path.exists() and path.stat().st_size > 0:
                seen.append(mode(path))
        finally:
            state["inside"] = False

    sys.addaudithook(hook)  # hooks cannot be removed: this one goes quiet on exit
    try:
        yield seen
    finally:
        state["watching"] = False


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common 022: what made the files world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_the_log_and_its_wal_are_the_owners_alone(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    async with await EventLog.open(db, "s1/t1", CountingFold()) as log:
        await log.append(cash_sale())
        files = [db, tmp_path / "log.db-wal", tmp_path / "log.db-shm"]
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}


async def test_a_log_an_older_build_left_readable_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    await (await EventLog.open(db, "s1/t1", CountingFold())).close()
    db.chmod(0o644)
    async with await EventLog.open(db, "s1/t1", CountingFold()):
        assert mode(db) == 0o600


def test_private_files_are_0600_new_or_replaced(tmp_path: Path) -> None:
    new, old = tmp_path / "new.conf", tmp_path / "old.conf"
    old.write_text("readable")
    old.chmod(0o644)
    for path in (new, old):
        write_private(path, b"secret")
        assert mode(path) == 0o600 and path.read_bytes() == b"secret"


async def test_a_nats_config_is_0600(tmp_path: Path) -> None:
    # A leaf remote to a hub that is not there: the server runs, retrying, seed and all.
    seed = Nkey.generate()
    leaf = LeafRemoteSpec((f"127.0.0.1:{free_port()}",), nkey=seed)
    config = ServerConfig(name="solo", port=free_port(), leaf_remotes=(leaf,))
    with modes_while_written(tmp_path / "solo.conf") as modes:
        async with EmbeddedNatsServer(config, tmp_path) as server:
            assert seed.seed in server.conf_path.read_text()
            assert mode(server.conf_path) == 0o600
    assert modes and set(modes) == {0o600}  # never wider, not even until a chmod
