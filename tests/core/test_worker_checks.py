"""Big frames checked in a worker process (`core.worker_checks`) end exactly as checked
in-process: the same stored bytes (covered signatures stripped), the same refusals with
the same messages, the same state digest. The worker is a real process: it stops with
the log, and a killed one leaves ingest to the caller, losing nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import msgspec
import psutil

from conflict import queries
from conflict.state import StoreState
from core.events import Event, encode_event, event_hash
from core.keys import KeyRegistry
from core.log import EventLog, IngestResult
from core.signing import Ed25519Signer, new_signing_seed
from core.worker_checks import MIN_WORKER_EVENTS
from tests.e2e.harness import wait_until
from tests.factories import cash_sale, chain

T2 = "s1/t2"
KEY, MALLORY = Ed25519Signer(new_signing_seed()), Ed25519Signer(new_signing_seed())
REGISTRY = KeyRegistry({T2: KEY.public_key})
N = 2 * MIN_WORKER_EVENTS + 300


def _signed_chain(n: int) -> list[Event]:
    """`n` sales of T2, every one signed (as its own log stores them), and among them an
    event of a type this build does not know (stored, not folded)."""
    bodies = [cash_sale(sku=f"SKU-{i % 7}", receipt=f"R{i}") for i in range(n)]
    out, prev = [], b""
    for i, ev in enumerate(chain(T2, bodies)):
        if i == 100:
            ev = msgspec.structs.replace(ev, type="loyalty.points", body=b"\x80")
        ev = msgspec.structs.replace(ev, prev=prev)
        prev = event_hash(ev)
        out.append(msgspec.structs.replace(ev, sig=KEY.sign(prev)))
    return out


EVENTS = _signed_chain(N)
RAWS = [encode_event(e) for e in EVENTS]


async def _open(path: Path, worker: bool) -> EventLog:
    return await EventLog.open(
        path, "s1/t1", StoreState(), verifier=REGISTRY, check_in_worker=worker
    )


async def _stored(log: EventLog) -> tuple[list[tuple[object, ...]], str]:
    def read(c):  # type: ignore[no-untyped-def]
        rows = c.execute("SELECT origin, seq, hash, raw, flags FROM events ORDER BY seq")
        return rows.fetchall(), queries.state_digest(c)

    return await log.read(read)


def _summary(r: IngestResult) -> tuple[int, int, int, list[str]]:
    return (len(r.stored), r.duplicates, r.held, [f"{type(e).__name__}: {e}" for e in r.rejected])


async def _ingest_frames(log: EventLog, frames: list[list[bytes]]) -> list[tuple[object, ...]]:
    return [_summary(await log.ingest_raw(frame, peer="s1/t2")) for frame in frames]


async def test_a_worker_checks_big_frames_as_the_caller_would(tmp_path: Path) -> None:
    # An overlapping second frame: its first events are known (at or below the head).
    frames = [RAWS[: MIN_WORKER_EVENTS + 100], RAWS[MIN_WORKER_EVENTS:]]
    here, there = await _open(tmp_path / "a.db", False), await _open(tmp_path / "b.db", True)
    try:
        assert await _ingest_frames(here, frames) == await _ingest_frames(there, frames)
        assert there._worker is not None and there._worker.pids(), "the worker never ran"
        assert not there._worker.broken
        stored, digest = await _stored(there)
        assert (stored, digest) == await _stored(here)
        assert len(stored) == N
        signed = [row for row in stored if msgspec.msgpack.decode(row[3])[-1]]  # type: ignore[arg-type]
        assert 0 < len(signed) < N / 100, "covered signatures are stripped, as in-process"
    finally:
        await here.close()
        await there.close()


async def test_a_frame_with_a_forged_event_is_refused_as_in_process(tmp_path: Path) -> None:
    forged = list(EVENTS)
    forged[-1] = msgspec.structs.replace(forged[-1], sig=MALLORY.sign(event_hash(forged[-1])))
    frame = [encode_event(e) for e in forged]
    here, there = await _open(tmp_path / "a.db", False), await _open(tmp_path / "b.db", True)
    try:
        ours = await _ingest_frames(here, [frame])
        assert ours[0][3], "the forged event is refused"
        assert await _ingest_frames(there, [frame]) == ours
        assert await _stored(there) == await _stored(here)
    finally:
        await here.close()
        await there.close()


async def test_the_worker_stops_with_the_log_and_a_killed_one_loses_nothing(
    tmp_path: Path,
) -> None:
    log = await _open(tmp_path / "a.db", True)
    try:
        await log.ingest_raw(RAWS[:MIN_WORKER_EVENTS])
        assert log._worker is not None
        (pid,) = log._worker.pids()
        os.kill(pid, signal.SIGKILL)
        result = await log.ingest_raw(RAWS[MIN_WORKER_EVENTS:])  # checked in-process
        assert len(result.stored) == N - MIN_WORKER_EVENTS and not result.rejected
        assert log._worker.broken
        assert log.version_vector()[T2] == N
    finally:
        await log.close()
    log = await _open(tmp_path / "b.db", True)
    await log.ingest_raw(RAWS[:MIN_WORKER_EVENTS])
    assert log._worker is not None
    (pid,) = log._worker.pids()
    await log.close()

    async def gone() -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    await wait_until(gone, f"worker {pid} to exit with its log", 10, every=0.05)
