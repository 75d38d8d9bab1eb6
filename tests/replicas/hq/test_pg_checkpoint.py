"""HQ on PostgreSQL takes a till's `log.signed` checkpoint (history from before signing,
vouched for: `core.keys`) as the SQLite log does.

s1/t2 wrote 8 events before its site had keys, then its checkpoint (9) and two signed
sales (10, 11); an unsigned event at 12 is a forgery once the checkpoint is known, and
an unsigned "checkpoint" at 9 is always one (`tests.core.upgrade_kit`). The
frames reach a SQLite HQ log and HQ on PostgreSQL in any order, one ingest each: every
frame's outcome, the version vector, the evidence and every figure must be the same,
and whatever the order the forgery is never stored (held on trust before the
checkpoint, it is checked again when the checkpoint comes).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import SignatureError
from core.events import Event
from replicas.hq.store import PgLog
from tests.core.upgrade_kit import AFTER, CHECKPOINT, FORGED, T2, UNSIGNED, UPGRADING
from tests.replicas.hq.pg_kit import feed_frames, on_one_database, raws, reset

FRAMES: dict[str, list[Event]] = {
    "early": UNSIGNED[:4],
    "late": UNSIGNED[4:],
    "checkpoint": [CHECKPOINT, *AFTER],
    "forged": [FORGED],
    "fake": [*UNSIGNED[4:], msgspec.structs.replace(CHECKPOINT, sig=b"")],
}


def _check(order: list[str], db: Path, dsn: str) -> dict[str, Any]:
    reset(dsn)
    on_sqlite, on_pg = asyncio.run(feed_frames(FRAMES, order, db, dsn, UPGRADING))
    for name, value in on_sqlite.items():
        assert on_pg[name] == value, (name, order)
    return on_pg


def _assert_forgery_refused(got: dict[str, Any], order: list[str]) -> None:
    assert got["vv"][T2] == 11, order  # 1-8 on trust, the checkpoint, 10-11 signed
    assert got["evidence"][(T2, 12, "SignatureError")] >= 1, order
    receipts = {s["id"] for s in got["sales"] if s and s["origin"] == T2}
    assert f"{T2}:12" not in receipts


@on_one_database(30)
@given(order=st.permutations(list(FRAMES)))
def test_a_checkpoint_treats_history_and_forgeries_as_on_sqlite(
    order: list[str], pg_dsn: str, tmp_path: Path
) -> None:
    got = _check(order, tmp_path / f"hq-{len(list(tmp_path.iterdir()))}.db", pg_dsn)
    _assert_forgery_refused(got, order)


@pytest.mark.soak
def test_every_order_treats_history_and_forgeries_as_on_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    """All 120 orders of the five frames, where the default run draws 30 at random."""
    for i, order in enumerate(itertools.permutations(FRAMES)):
        _assert_forgery_refused(_check(list(order), tmp_path / f"hq-{i}.db", pg_dsn), list(order))


@pytest.mark.parametrize(
    "order",
    [
        ["early", "late", "checkpoint", "forged", "fake"],  # in order: refused on arrival
        ["early", "forged", "late", "checkpoint", "fake"],  # held; checked at the checkpoint
        ["forged", "checkpoint", "early", "late", "fake"],  # drained with it: checked again
        ["fake", "checkpoint", "forged", "late", "early"],
        # the checkpoint drains in after 8, before the fake 9 behind it in the frame
        ["early", "checkpoint", "forged", "fake", "late"],
    ],
)
def test_the_stories_that_matter(order: list[str], pg_dsn: str, tmp_path: Path) -> None:
    """Spelled out: the forgery sent after the checkpoint, held before it, and held
    below it so that the checkpoint and it drain in one go when the gap fills (where
    the SQLite log drained it too, unchecked, before `core.batch`'s drain stopped at a
    checkpoint)."""
    _assert_forgery_refused(_check(order, tmp_path / "hq.db", pg_dsn), order)


async def _refused_after_restart(dsn: str) -> list[object]:
    async with await PgLog.open(dsn, "hq", verifier=UPGRADING) as log:
        return list((await log.ingest(raws([FORGED]))).rejected)


def test_the_checkpoint_outlives_a_restart_and_an_upgrade(pg_dsn: str, tmp_path: Path) -> None:
    """Kept in hq_checkpoints; a database from before them (schema 7) finds it among
    the stored events when it migrates."""
    _check(["early", "late", "checkpoint"], tmp_path / "hq.db", pg_dsn)
    (refused,) = asyncio.run(_refused_after_restart(pg_dsn))
    assert isinstance(refused, SignatureError)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE hq_checkpoints")
        conn.execute("UPDATE hq_schema SET version = 7")
    (refused,) = asyncio.run(_refused_after_restart(pg_dsn))
    assert isinstance(refused, SignatureError)
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT origin, seq FROM hq_checkpoints").fetchall() == [(T2, 9)]
