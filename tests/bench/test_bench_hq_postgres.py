"""HQ on PostgreSQL: ingest events/s with 1 and 2 workers, beside the SQLite HQ and raw
COPY of the same rows, all in one run. Figures only (no timed asserts).

(a) The ingest stage alone: the same pre-recorded frames (10 stores x 5 tills of signed
    sales, one origin's pull window per frame, read from the stores' logs) fed to the
    SQLite HQ's log (`EventLog.ingest_raw`, in this process) and to 1 and 2 `PgLog`
    worker processes (each its share of the stores, signatures checked), and the rows
    of those events COPYed into a staging table (the floor) and moved into the keyed
    event table with INSERT ... ON CONFLICT DO NOTHING, and COPYed straight into the
    keyed table as `PgLog` writes them (the events alone, no read model).
(b) End to end: the same 10 stores over NATS (one `tillmesh till` per store serving its
    store's log, as in test_bench_replication's HQ ingest), taken in by a `tillmesh hq`
    on SQLite, then by 1 and then 2 `tillmesh hq --db ... --shard K/N` workers, each on
    an empty database, timed from HQ serving to the last event in.

Targets (issue 16), as ratios of this run: (a) 2 workers >= 2x the SQLite HQ and >= 0.5
of the COPY floor; (b) >= 1.5x the SQLite HQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil  # type: ignore[import-untyped]
import psycopg
import pytest

from broker.subjects import HQ
from conflict.state import StoreState
from core.checks import check_events
from core.events import RawEvent, decode_event, event_hash
from core.log import EventLog
from replicas.hq.cluster import LocalPostgres
from replicas.hq.schema import migrate
from tests.bench.conftest import table
from tests.bench.measure import CHUNK, populate_store, raws_of
from tests.bench.pg_ingest_worker import in_flight
from tests.e2e.harness import Mesh, ReplicaProc, wait_until

pytestmark = pytest.mark.bench

STORES, TILLS, PER_TILL = 10, 5, 2000
TOTAL = STORES * TILLS * PER_TILL
_dbs = itertools.count(1)


def _new_db(pg: LocalPostgres) -> str:
    name = f"bench{next(_dbs)}"
    admin = pg.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    dsn = pg.dsn.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, dsn)
    return dsn


def _frames(mesh: Mesh) -> list[list[bytes]]:
    """Every origin's events in pull windows, in the order a catch-up pulls them."""
    frames = []
    for s in range(1, STORES + 1):
        db = mesh.site.data_dir(mesh.root, f"s{s}/t1") / "log.db"
        for t in range(1, TILLS + 1):
            raws = raws_of(db, f"s{s}/t{t}")
            frames += [raws[i : i + CHUNK] for i in range(0, len(raws), CHUNK)]
    return frames


@dataclass
class Ingest:
    rate: float  # events/s, wall
    client_us: float  # CPU per event of the ingesting process(es): Python (and SQLite)
    server_us: float = 0.0  # CPU per event of PostgreSQL's processes

    @property
    def cpu_us(self) -> float:
        return self.client_us + self.server_us


def _server_cpu(pg: LocalPostgres) -> float:
    """CPU seconds of the postmaster and its live children (backends, WAL writer, ...)."""
    pid = pg.postmaster_pid()
    assert pid is not None
    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


async def _sqlite_rate(tmp: Path, mesh: Mesh, frames: list[list[bytes]]) -> Ingest:
    log = await EventLog.open(tmp / "hq-bench.db", HQ, StoreState(),
                              verifier=mesh.site.key_registry())  # fmt: skip
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        results = await in_flight(log.ingest_raw, frames)
        assert not any(r.rejected for r in results)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return Ingest(TOTAL / wall, cpu / TOTAL * 1e6)
    finally:
        await log.close()


def _pg_rate(pg: LocalPostgres, dsn: str, mesh: Mesh, frames_file: Path, workers: int) -> Ingest:
    """Events/s of `workers` worker processes, from the go to the last one done, and
    their CPU and the server's per event."""
    argv = [sys.executable, "-m", "tests.bench.pg_ingest_worker", dsn, str(mesh.root),
            str(frames_file)]  # fmt: skip
    procs = [
        subprocess.Popen(
            [*argv, f"{k}/{workers}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for k in range(workers)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        server0, t0 = _server_cpu(pg), time.perf_counter()
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        events, client = 0, 0.0
        for p in procs:
            assert p.stdout is not None
            word, _, n, cpu = p.stdout.readline().split()
            assert word == "done"
            events, client = events + int(n), client + float(cpu)
        elapsed, server = time.perf_counter() - t0, _server_cpu(pg) - server0
        assert events == TOTAL
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("exit\n")
            p.stdin.flush()
    finally:
        for p in procs:
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
            p.wait(30)
    return Ingest(TOTAL / elapsed, client / TOTAL * 1e6, server / TOTAL * 1e6)


def _checks_us(mesh: Mesh, frames: list[list[bytes]]) -> float:
    """CPU µs per event of the checks every HQ must make before it stores an event
    (decode, hash chain, typed body, signatures: `check_events`), on one core."""
    registry = mesh.site.key_registry()
    t0 = time.thread_time()
    for frame in frames:
        checked = check_events([RawEvent(decode_event(raw), raw) for raw in frame], {}, registry)
        assert not any(c.error for c in checked)
    return (time.thread_time() - t0) / TOTAL * 1e6


@dataclass
class Floors:
    copy: float  # ev/s: COPY into a staging table
    insert: float  # ev/s: that, then INSERT ... ON CONFLICT into the keyed table
    keyed: float  # ev/s: COPY straight into the keyed table, as HQ's ingest does
    keyed_server_us: float  # the server's CPU per event for that keyed COPY


def _copy_rates(pg: LocalPostgres, dsn: str, frames: list[list[bytes]]) -> Floors:
    """The database's own cost of the same rows, with no Python in the way."""
    rows = []
    for frame in frames:
        for raw in frame:
            ev = decode_event(raw)
            rows.append((ev.origin.partition("/")[0], ev.origin, ev.seq, ev.hlc, ev.type, 0,
                         event_hash(ev), raw))  # fmt: skip
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE staging (LIKE hq_events)")
        t0 = time.perf_counter()
        with conn.cursor().copy("COPY staging FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "int8", "int8", "text", "int4", "bytea", "bytea"])
            for row in rows:
                copy.write_row(row)
        copied = time.perf_counter()
        conn.execute("INSERT INTO hq_events SELECT * FROM staging ON CONFLICT DO NOTHING")
        conn.commit()
        done = time.perf_counter()
        conn.execute("TRUNCATE hq_events")
        conn.commit()
        t1, server0 = time.perf_counter(), _server_cpu(pg)
        with conn.cursor().copy("COPY hq_events FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["text", "text", "int8", "int8", "text", "int4", "bytea", "bytea"])
            for row in rows:
                copy.write_row(row)
        conn.commit()
        keyed, server = time.perf_counter(), _server_cpu(pg) - server0
    return Floors(TOTAL / (copied - t0), TOTAL / (done - t0), TOTAL / (keyed - t1),
                  server / TOTAL * 1e6)  # fmt: skip


class WorkerProc(ReplicaProc):
    """`tillmesh hq --db DSN --shard K/N` in the bench's site."""

    def __init__(self, mesh: Mesh, dsn: str, index: int, count: int) -> None:
        super().__init__(mesh, HQ)
        self.dsn, self.shard = dsn, f"{index}/{count}"
        self.out = mesh.logs / f"hq-pg-{index}-of-{count}.log"
        if index:
            self.data_dir = self.data_dir / "workers" / f"{index}-of-{count}"

    def command(self, fresh: bool) -> list[str]:
        db = ["--db", self.dsn, "--shard", self.shard, "--fresh"]
        return [*self.mesh.tillmesh, "hq", "--data", str(self.root), *db]

    async def wait_up(self) -> None:
        word = "serving on" if self.shard.startswith("0/") else "up (PostgreSQL)"

        async def up() -> bool:
            assert self.running, self.tail()
            return word.encode() in self.out.read_bytes()[self._out_from :]

        await wait_until(up, f"HQ worker {self.shard}", 60, every=0.05)


def _timeline(who: str, seen: list[tuple[float, int]]) -> None:
    """When the first events came in (the tills' leaf links to a hub just started
    reconnect every `leaf_reconnect_seconds`) and when the rest did."""
    marks = [next(t for t, n in seen if n >= TOTAL * f) for f in (0.01, 0.5, 0.9, 1.0)]
    print(f"  {who}: 1% / 50% / 90% / all of the events in after "
          + " / ".join(f"{t:.2f}" for t in marks) + " s")  # fmt: skip


async def _sqlite_end_to_end(mesh: Mesh) -> float:
    await mesh.start(HQ)
    ready = time.perf_counter()
    seen: list[tuple[float, int]] = []  # (seconds since ready, events at HQ)

    async def ingested() -> bool:
        vv = (await mesh[HQ].status(digest=False))["version_vector"]
        seen.append((time.perf_counter() - ready, sum(vv.values())))
        return sum(vv.values()) == TOTAL

    await wait_until(ingested, f"HQ to hold {TOTAL} events", 300, every=0.05)
    rate = TOTAL / (time.perf_counter() - ready)
    _timeline("SQLite HQ", seen)
    assert not mesh[HQ].stop()
    return rate


async def _pg_end_to_end(mesh: Mesh, dsn: str, workers: int) -> float:
    procs = [WorkerProc(mesh, dsn, k, workers) for k in range(workers)]
    for k, p in enumerate(procs):
        mesh.procs[f"hq-bench-{workers}-{k}"] = p  # stopped with the mesh, whatever happens
        p.spawn(fresh=True)
    await asyncio.gather(*(p.wait_up() for p in procs))
    ready = time.perf_counter()
    seen: list[tuple[float, int]] = []  # (seconds since ready, events in PostgreSQL)

    async def ingested() -> bool:
        with psycopg.connect(dsn) as conn:
            row = conn.execute("SELECT COALESCE(SUM(seq), 0) FROM hq_heads").fetchone()
        assert row is not None
        seen.append((time.perf_counter() - ready, int(row[0])))
        return row[0] == TOTAL

    await wait_until(ingested, f"PostgreSQL to hold {TOTAL} events", 300, every=0.05)
    rate = TOTAL / (time.perf_counter() - ready)
    _timeline(f"PostgreSQL, {workers} worker(s)", seen)
    for p in procs:
        assert not p.stop()
    return rate


async def test_bench_hq_on_postgres(tmp_path: Path, postgres: LocalPostgres) -> None:
    layout = {f"s{s}": [f"t{t}" for t in range(1, TILLS + 1)] for s in range(1, STORES + 1)}
    mesh = Mesh(tmp_path, layout)
    servers = [f"s{s}/t1" for s in range(1, STORES + 1)]
    try:
        await asyncio.gather(*(populate_store(mesh, rid, TILLS, PER_TILL) for rid in servers))
        frames = _frames(mesh)
        frames_file = tmp_path / "frames.msgpack"
        frames_file.write_bytes(msgspec.msgpack.encode(frames))

        a_sqlite = await _sqlite_rate(tmp_path, mesh, frames)
        a_pg1 = await asyncio.to_thread(_pg_rate, postgres, _new_db(postgres), mesh, frames_file, 1)
        a_pg2 = await asyncio.to_thread(_pg_rate, postgres, _new_db(postgres), mesh, frames_file, 2)
        floors = _copy_rates(postgres, _new_db(postgres), frames)
        checks_us = _checks_us(mesh, frames)

        await mesh.start(*servers, fresh=False)
        b_sqlite = await _sqlite_end_to_end(mesh)
        b_pg1 = await _pg_end_to_end(mesh, _new_db(postgres), 1)
        b_pg2 = await _pg_end_to_end(mesh, _new_db(postgres), 2)
    finally:
        assert await mesh.close() == []

    def ev(rate: float) -> str:
        return f"{rate:,.0f} ev/s"

    # The most any HQ could ingest here: every core doing nothing but the checks it must
    # make and the server's keyed write of the events (no read model, no Python between).
    cores = os.cpu_count() or 1
    ceiling = cores / (checks_us + floors.keyed_server_us) * 1e6

    def cpu(i: Ingest) -> str:
        split = f" = {i.client_us:.1f} Python + {i.server_us:.1f} server" if i.server_us else ""
        return f"CPU {i.cpu_us:.1f} us/event{split}"

    table(
        f"(a) HQ ingest stage, pre-recorded frames: {STORES} stores x {TILLS} tills x "
        f"{PER_TILL} = {TOTAL:,} signed events",
        [
            ("SQLite HQ (one log)", ev(a_sqlite.rate), f"baseline; {cpu(a_sqlite)}"),
            ("PostgreSQL, 1 worker", ev(a_pg1.rate),
             f"{a_pg1.rate / a_sqlite.rate:.2f}x SQLite; {cpu(a_pg1)}"),
            ("PostgreSQL, 2 workers", ev(a_pg2.rate),
             f"{a_pg2.rate / a_sqlite.rate:.2f}x SQLite (target >= 2), "
             f"{a_pg2.rate / floors.copy:.2f} of COPY (target >= 0.5); {cpu(a_pg2)}"),
            ("COPY into staging (floor)", ev(floors.copy), "the same rows, one COPY"),
            ("COPY + INSERT ON CONFLICT", ev(floors.insert), "events alone, no read model"),
            ("COPY into hq_events (keyed)", ev(floors.keyed),
             f"events alone, as HQ writes them (no read model); server CPU "
             f"{floors.keyed_server_us:.1f} us/event"),
            ("checks alone, one core", ev(1e6 / checks_us),
             f"CPU {checks_us:.1f} us/event: decode, hash, typed body, signatures"),
            (f"ceiling on {cores} cores", ev(ceiling),
             f"{ceiling / floors.copy:.2f} of COPY: every core only checking and "
             "writing the keyed events"),
            ("cores busy meanwhile", f"{os.getloadavg()[0]:.1f} load",
             f"of {os.cpu_count()} cores: the machine is shared"),
        ],
    )  # fmt: skip
    table(
        f"(b) end to end over NATS: {STORES} stores (one serving till each) -> HQ",
        [
            ("SQLite HQ", ev(b_sqlite), "baseline"),
            ("PostgreSQL, 1 worker", ev(b_pg1), f"{b_pg1 / b_sqlite:.2f}x SQLite"),
            ("PostgreSQL, 2 workers", ev(b_pg2), f"{b_pg2 / b_sqlite:.2f}x SQLite (target >= 1.5)"),
        ],
    )
