"""HQ on PostgreSQL takes a key rotation (`key.rotated`) in as the SQLite log does.

s1/t2 signs seqs 1-5 with its old key and from 6 on with its new one; a thief signs
6-8 with the old key (`tests.core.rotation_kit`). The frames (the old key's history, the
new key's events, the thief's, HQ's rotation) reach a SQLite HQ log and HQ on
PostgreSQL in any order, one ingest each: every frame's outcome (stored, duplicates,
held, refused), the version vector, the evidence kept and every figure must be the
same. The SQLite log holds the new key's events until the rotation (`unverified`),
then checks them again; the thief's events, stored before the rotation, are evicted
for quarantine and the chain's head goes back (`core.rotation`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core.events import Event
from replicas.hq import reports as pg_reports
from replicas.hq import rotation
from replicas.hq.store import PgLog
from tests.core.rotation_kit import AFTER, BEFORE, REGISTRY, ROTATE, STOLEN, T2
from tests.replicas.hq.pg_kit import feed_frames, figures, raws, reset

FRAMES: dict[str, list[Event]] = {
    "before": BEFORE, "after": AFTER, "stolen": STOLEN, "rotate": [ROTATE],
}  # fmt: skip


async def _feed(order: list[str], db: Path, dsn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    return await feed_frames(FRAMES, order, db, dsn, REGISTRY)


def test_a_rotation_treats_held_later_and_stolen_events_as_on_sqlite(
    pg_dsn: str, tmp_path: Path
) -> None:
    """Every order of the four frames (24: fewer runs than the 30 random draws this
    took, which repeated orders and could miss one), one database reset between them."""
    for i, order in enumerate(itertools.permutations(FRAMES)):
        reset(pg_dsn)
        on_sqlite, on_pg = asyncio.run(_feed(list(order), tmp_path / f"hq-{i}.db", pg_dsn))
        for name, value in on_sqlite.items():
            assert on_pg[name] == value, (name, order)
        assert on_pg["vv"][T2] >= len(BEFORE), order  # the old key's history is in


def _sales_of_t2(got: dict[str, Any]) -> list[str]:
    return sorted(s["id"] for s in got["sales"] if s and s["origin"] == T2)


@pytest.mark.parametrize("chunk", [rotation.VOUCH_CHUNK, 2])
def test_held_events_apply_and_stolen_ones_leave_when_the_rotation_comes(
    chunk: int, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two stories that matter, spelled out: the new key's events held until the
    rotation, then applied; the thief's events stored first, then evicted for evidence
    and replaced by the till's own (the stored events read a chunk at a time: with
    chunks of 2, over several)."""
    monkeypatch.setattr(rotation, "VOUCH_CHUNK", chunk)
    for i, order in enumerate((["before", "after", "rotate", "stolen"],
                               ["before", "stolen", "rotate", "after"])):  # fmt: skip
        reset(pg_dsn)
        on_sqlite, on_pg = asyncio.run(_feed(order, tmp_path / f"hq{i}.db", pg_dsn))
        for name, value in on_sqlite.items():
            assert on_pg[name] == value, (name, order)
        assert on_pg["vv"][T2] == 10
        assert _sales_of_t2(on_pg) == sorted(f"{T2}:{n}" for n in range(1, 11))
        kept = {(o, s): k for (o, s, k) in on_pg["evidence"]}
        assert {kept[(T2, n)] for n in (6, 7, 8)} == {"SignatureError"}, order


async def _two_workers(order: list[str], dsn: str) -> dict[str, Any]:
    """The frames through two ingest workers: worker 0 owns HQ's origin (it takes the
    rotation in), worker 1 the till's store; worker 1 applies the rotation when it
    reads HQ's rotations (`refresh_keys`, as it does beside its shared heads)."""
    front = await PgLog.open(dsn, "hq", owns=lambda o: o == "hq", verifier=REGISTRY)
    stores = await PgLog.open(dsn, "hq", owns=lambda o: o != "hq", verifier=REGISTRY)
    try:
        for name in order:
            worker = front if name == "rotate" else stores
            await worker.ingest(raws(FRAMES[name]))
            if name == "rotate":
                assert await stores.refresh_keys()
                assert not await stores.refresh_keys()  # applied once
        got: dict[str, Any] = {"vv": {**front.version_vector(), **stores.version_vector()}}
    finally:
        await front.close()
        await stores.close()
    with psycopg.connect(dsn) as conn:
        got.update(figures(conn, pg_reports))
        rows = conn.execute("SELECT origin, seq, kind FROM hq_quarantine").fetchall()
        got["evidence"] = Counter((o, int(s), k) for o, s, k in rows)
    return got


def test_a_rotation_taken_in_by_worker_0_applies_at_the_till_s_worker(
    pg_dsn: str, tmp_path: Path
) -> None:
    for i, order in enumerate((["before", "after", "rotate", "stolen"],
                               ["before", "stolen", "rotate", "after"])):  # fmt: skip
        reset(pg_dsn)
        on_sqlite, _ = asyncio.run(_feed(order, tmp_path / f"one{i}.db", pg_dsn))
        reset(pg_dsn)
        on_pg = asyncio.run(_two_workers(order, pg_dsn))
        for name, value in on_pg.items():
            assert value == on_sqlite[name], (name, order)
        assert on_pg["vv"][T2] == 10
