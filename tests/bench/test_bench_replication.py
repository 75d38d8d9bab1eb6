"""Issue 3 and 19 benchmarks: catch-up, in-store propagation latency, HQ ingest. Figures only.

Every figure comes from real processes or real nats-servers measured in the same run;
catch-up is printed beside NATS JetStream leaf sourcing of the same envelope bytes (two
nats-servers, a hub stream sourcing an edge stream over a leaf link: `jetstream.py`),
raw NATS throughput (nats-py core publish -> subscribe, framed like pull replies), the
log's own ingest and the layout's SQLite floor, as ratios, since the box is shared.
Targets (issue 19): catch-up >= 0.6x JetStream leaf sourcing, ingest >= 0.6x the floor;
a sale on the serving till during catch-up p99 <= 2x idle; p99 propagation <= 50 ms;
HQ ingest >= 50,000 events/s. No timed asserts: only that the work was done.

Run with `make bench` (add `-m "bench and soak"` for the 1M catch-up).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import nats
import psutil
import pytest

from broker.server import EmbeddedNatsServer
from conflict.state import StoreState
from core.log import EventLog, IngestResult
from core.signing import Verifier
from replicas.runtime import Replica
from replicas.sync.protocol import holds
from tests.bench.conftest import percentile, table
from tests.bench.ingest_profile import FLOOR_TABLES, sqlite_floor
from tests.bench.jetstream import Copy, jetstream_leaf_rate
from tests.bench.measure import (
    CHUNK,
    latency_text,
    populate,
    populate_store,
    progress,
    raws_of,
)
from tests.broker.kit import Site, connect_replica, hq_config
from tests.e2e.harness import Mesh, wait_until
from tests.factories import cash_sale

pytestmark = pytest.mark.bench


# --- preparing logs -------------------------------------------------------------------------


# --- raw NATS baseline ----------------------------------------------------------------------


AHEAD = 32  # frames the raw NATS publisher may be ahead of its subscriber (~14 MB)


async def raw_nats_rate(tmp: Path, raws: list[bytes]) -> float:
    """Events/s through one nats-server, core publish -> subscribe, framed in CHUNKs."""
    from replicas.sync.protocol import build_reply

    site = Site(tmp / "raw-nats" / "site")
    frames = [
        build_reply("hq", 1, raws[i : i + CHUNK], 8 << 20, False)[0]
        for i in range(0, len(raws), CHUNK)
    ]
    async with EmbeddedNatsServer(hq_config(site, ["s1"]), tmp / "raw-nats") as srv:
        pub = await connect_replica(srv, site, "hq")
        sub = await connect_replica(srv, site, "hq")
        done, got = asyncio.Event(), [0]

        async def on_msg(msg: nats.aio.msg.Msg) -> None:
            got[0] += 1
            if got[0] == len(frames):
                done.set()

        await sub.subscribe("tm.ev.hq", cb=on_msg)
        await sub.flush()
        await asyncio.sleep(0.2)  # interest propagated (one server: immediate)
        t0 = time.perf_counter()
        for k, frame in enumerate(frames):
            await pub.publish("tm.ev.hq", frame)
            # At most AHEAD frames unread: on a loaded box the server otherwise drops the
            # subscriber as a slow consumer, and a 1M run waited out its timeout.
            for _ in range(100_000):
                if k - got[0] < AHEAD:
                    break
                await asyncio.sleep(0.0005)
        await pub.flush()
        await asyncio.wait_for(done.wait(), 120)
        rate = len(raws) / (time.perf_counter() - t0)
        await pub.close()
        await sub.close()
    return rate


async def bare_ingest_rate(tmp: Path, raws: list[bytes], verifier: Verifier) -> float:
    """Events/s of the log alone ingesting the same bytes in pull-window batches (no NATS),
    as a till takes a catch-up's: signatures checked with the site's keys, in the
    checking worker, two frames in flight (one checked while the other is written)."""
    log = await EventLog.open(
        tmp / "bare.db",
        "s1/t1",
        StoreState(),
        in_scope=holds("s1/t1"),
        verifier=verifier,
        check_in_worker=True,
    )
    try:
        # Timed from the first frame's end, as catch-up is from its first progress: the
        # worker's start (~0.5 s) is in neither.
        assert not (await log.ingest_raw(raws[:CHUNK])).rejected
        running: list[asyncio.Task[IngestResult]] = []
        t0 = time.perf_counter()
        for i in range(CHUNK, len(raws), CHUNK):
            running.append(asyncio.create_task(log.ingest_raw(raws[i : i + CHUNK])))
            if len(running) == 2:
                assert not (await running.pop(0)).rejected
        for task in running:
            assert not (await task).rejected
        return (len(raws) - CHUNK) / (time.perf_counter() - t0)
    finally:
        await log.close()


# --- catch-up ----------------------------------------------------------------------------------


@dataclass
class CatchUp:
    rate: float  # events/s, from t1's first progress to done
    raw: float  # raw NATS, same bytes
    bare: float  # t1's log alone ingesting the same bytes
    floor: float  # SQLite alone writing the rows that ingest wrote (no Python)
    sources: Copy  # JetStream: a hub stream sourcing an edge stream of the same bytes
    mirror: Copy  # ... mirroring it
    # s of CPU per event: the catching-up till t1, its check worker, the serving till
    # t2, and both tills' nats-servers
    cpu_per_event: dict[str, float]
    idle_sales: list[float]  # latency of sales on the serving till t2 before the catch-up
    busy_sales: list[float]  # ... and while t1 catches up from it


async def _sell_until(
    mesh: Mesh, rid: str, done: asyncio.Event, latencies: list[float], most: int = 2000
) -> None:
    """Sales on `rid` through its HTTP API, 20 ms apart, until `done` (at most `most`)."""
    for _ in range(most):
        if done.is_set():
            return
        t0 = time.perf_counter()
        await mesh.sell(rid)
        latencies.append(time.perf_counter() - t0)
        await asyncio.sleep(0.02)


IDLE_SALES = 200


def _processes(mesh: Mesh) -> dict[str, list[psutil.Process]]:
    """The catch-up's processes by role (children of t1 but its nats-server: the worker
    that checks frames, and the forkserver it came from)."""
    t1, t2 = mesh["s1/t1"], mesh["s1/t2"]
    main = psutil.Process(t1.pid)
    servers = t1.nats_servers() + t2.nats_servers()
    ours = {p.pid for p in servers}
    return {
        "t1 till": [main],
        "t1 check worker": [p for p in main.children(recursive=True) if p.pid not in ours],
        "t2 serving (and selling)": [psutil.Process(t2.pid)],
        "nats-servers": servers,
    }


async def catch_up(tmp: Path, n: int) -> CatchUp:
    """A fresh till t1 catches up `n` events from till t2 (both `tillmesh till` processes)
    while t2 keeps selling (flow control: the catch-up must not starve t2's sales)."""
    mesh = Mesh(tmp, {"s1": ["t1", "t2"]})
    idle: list[float] = []
    busy: list[float] = []
    try:
        db = mesh.site.data_dir(mesh.root, "s1/t2") / "log.db"
        db.parent.mkdir(parents=True, exist_ok=True)  # its identity is there
        await populate(db, "s1/t2", {"s1/t2": n})
        raws = raws_of(db, "s1/t2")
        sources = await jetstream_leaf_rate(tmp, raws, "sources")
        mirror = await jetstream_leaf_rate(tmp, raws, "mirror")
        raw = await raw_nats_rate(tmp, raws)
        bare = await bare_ingest_rate(tmp, raws, mesh.site.key_registry())
        floor = 1e6 / sqlite_floor(tmp / "bare.db", tmp / "floor.db", FLOOR_TABLES)
        del raws
        await mesh.start("s1/t2", fresh=False)
        # as many sales, paced alike, as a catch-up of 100,000 sees: a p99 of 50 samples
        # was their maximum, set by one slow fsync, which swung the ratio 1.4-2.1x
        await _sell_until(mesh, "s1/t2", asyncio.Event(), idle, most=IDLE_SALES)
        total = n + len(idle)
        done = asyncio.Event()
        seller = asyncio.create_task(_sell_until(mesh, "s1/t2", done, busy))
        await mesh.start("s1/t1", fresh=True)
        try:
            got = await progress(
                mesh, "s1/t1", "s1/t2", total, 60 + n / 2000, cpu=lambda: _processes(mesh)
            )
        finally:
            done.set()
            await seller
    finally:
        await mesh.close()
    return CatchUp(got.rate, raw, bare, floor, sources, mirror, got.cpu_per_event, idle, busy)


def catch_up_rows(n: int, c: CatchUp) -> list[tuple[str, str, str]]:
    rate, busy_p99 = c.rate, percentile(c.busy_sales, 99) / percentile(c.idle_sales, 99)
    # what 0.6x of JetStream's rate leaves per event, both cores busy all the time
    budget = 2 / (0.6 * c.sources.rate)
    return [
        (f"catch-up {n:,} events", f"{rate:,.0f} ev/s", "validated, signed, durable, folded"),
        (
            "  JetStream leaf sources",
            f"{c.sources.rate:,.0f} ev/s",
            f"catch-up = {rate / c.sources.rate:.2f}x of it (target >= 0.6)",
        ),
        ("  JetStream leaf mirror", f"{c.mirror.rate:,.0f} ev/s", f"{rate / c.mirror.rate:.2f}x"),
        (
            "  CPU per event",
            f"{sum(c.cpu_per_event.values()) * 1e6:,.1f} µs",
            f"all processes; JetStream sources {c.sources.cpu_per_event * 1e6:.1f} µs (both"
            f" servers); 0.6x of its rate leaves {budget * 1e6:.1f} µs on 2 cores",
        ),
        (
            "",
            "of it",
            ", ".join(f"{name} {s * 1e6:.1f}" for name, s in c.cpu_per_event.items()),
        ),
        ("  raw NATS, same bytes", f"{c.raw:,.0f} ev/s", f"catch-up = {rate / c.raw:.3f} of raw"),
        ("  log ingest alone", f"{c.bare:,.0f} ev/s", f"catch-up = {rate / c.bare:.2f} of it"),
        (
            "  floor of the layout",
            f"{c.floor:,.0f} ev/s",
            f"ingest = {c.bare / c.floor:.2f}x of it (target >= 0.6); SQLite alone",
        ),
        ("  sale on the serving till", "idle", latency_text(c.idle_sales)),
        (
            "",
            f"during catch-up ({len(c.busy_sales)})",
            f"{latency_text(c.busy_sales)}; p99 {busy_p99:.1f}x idle (target <= 2)",
        ),
    ]


async def test_bench_catch_up(tmp_path: Path) -> None:
    rows = []
    for n in (10_000, 100_000):
        rows += catch_up_rows(n, await catch_up(tmp_path / f"n{n}", n))
    table("catch-up of a till that missed N events (tillmesh till processes)", rows)


@pytest.mark.soak
async def test_bench_catch_up_1m(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "soak" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("1M catch-up: run with -m soak or -m 'bench and soak'")
    figures = await catch_up(tmp_path, 1_000_000)
    table("catch-up of a till that missed 1M events", catch_up_rows(1_000_000, figures))


# --- propagation latency --------------------------------------------------------------------


async def test_bench_in_store_propagation(tmp_path: Path) -> None:
    """Durable on till A (append returned) -> durable on till B (B's log listener), both
    replicas in this process (one clock), each with its own nats-server, routed."""
    mesh = Mesh(tmp_path, {"s1": ["t1", "t2"]})
    a = Replica(mesh.site, "s1/t1", mesh.root, fresh=True)
    b = Replica(mesh.site, "s1/t2", mesh.root, fresh=True)
    arrived: dict[int, float] = {}
    try:
        await a.start()
        await b.start()
        b.log.listeners.append(
            lambda evs: arrived.update(
                {e.seq: time.perf_counter() for e, _ in evs if e.origin == "s1/t1"}
            )
        )
        await wait_until(lambda: _routed(a, b), "t1 and t2 to hear each other", 30)
        sent: dict[int, float] = {}
        for i in range(400):
            ev = await a.log.append(cash_sale(receipt=f"P-{i}"))
            sent[ev.seq] = time.perf_counter()
            await asyncio.sleep(0.005)
        await wait_until(_all_arrived(arrived, sent), "every event on B", 30)
    finally:
        await b.stop()
        await a.stop()
        await mesh.close()
    lat = [arrived[s] - t for s, t in sent.items()]
    p99 = percentile(lat, 99)
    table(
        "in-store propagation, durable on A -> durable on B (400 sales, 5 ms apart)",
        [
            ("p50", f"{percentile(lat, 50) * 1e3:.2f} ms", ""),
            ("p99", f"{p99 * 1e3:.2f} ms", f"target <= 50 ms ({p99 / 0.05:.2f}x)"),
            ("max", f"{max(lat) * 1e3:.2f} ms", ""),
        ],
    )


async def _routed(a: Replica, b: Replica) -> bool:
    return "s1/t2" in a.sync_status().get("peers", {}) and "s1/t1" in b.sync_status().get(
        "peers", {}
    )


def _all_arrived(arrived: dict[int, float], sent: dict[int, float]):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return set(sent) <= set(arrived)

    return check


# --- HQ ingest --------------------------------------------------------------------------------


async def test_bench_hq_ingest(tmp_path: Path) -> None:
    """HQ (a `tillmesh hq` process) takes in 10 stores x 5 tills of history. One till per
    store runs (a `tillmesh till` process holding its whole store's log, as every till
    does) and serves it; HQ starts empty once they are up."""
    stores, tills, per_till = 10, 5, 2000
    layout = {f"s{s}": [f"t{t}" for t in range(1, tills + 1)] for s in range(1, stores + 1)}
    mesh = Mesh(tmp_path, layout)
    servers = [f"s{s}/t1" for s in range(1, stores + 1)]
    total = stores * tills * per_till
    try:
        await asyncio.gather(*(populate_store(mesh, rid, tills, per_till) for rid in servers))
        await mesh.start(*servers, fresh=False)
        t0 = time.perf_counter()
        await mesh.start("hq")
        ready = time.perf_counter()

        async def ingested() -> bool:
            vv = (await mesh["hq"].status(digest=False))["version_vector"]
            return sum(vv.values()) == total

        await wait_until(ingested, f"HQ to hold {total} events", 300, every=0.1)
        done = time.perf_counter()
    finally:
        await mesh.close()
    rate = total / (done - ready)
    table(
        f"HQ ingest: {stores} stores x {tills} tills x {per_till} events = {total:,}",
        [
            ("from HQ serving", f"{rate:,.0f} ev/s", f"target >= 50,000 ({rate / 5e4:.2f}x)"),
            ("from HQ spawn", f"{total / (done - t0):,.0f} ev/s", "includes HQ's start-up"),
        ],
    )
