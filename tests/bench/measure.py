"""Measuring replication between real `tillmesh` processes, wherever they run (loopback, or
machines of replicas/demo/netlab/): what the benchmarks share. Figures only, no timed asserts.

    async with running_mesh(tmp, {"s1": ["t1", "t2"]}) as mesh:
        lat = await propagation(mesh, "s1/t1", "s1/t2", sales=200)   # seconds, per sale
        back = await catch_up_after(mesh, "s1/t1", "s1/t2", 20_000, away, back)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil

from conflict.state import StoreState
from core import segments
from core.events import event_hash
from core.log import EventLog
from replicas.keyfiles import load_signer
from replicas.sync.protocol import holds
from tests.bench.conftest import percentile
from tests.e2e.harness import Mesh, split_id, wait_until
from tests.factories import cash_sale, chain

__all__ = [
    "CHUNK",
    "CatchUpAfter",
    "Progress",
    "append_latencies",
    "catch_up_after",
    "head",
    "latency_text",
    "populate",
    "populate_store",
    "progress",
    "propagation",
    "raws_of",
]

CHUNK = 2000  # = SyncConfig.pull_window: events per pull reply
WATCH_EVERY = 0.0005  # s between two looks at the logs a propagation watches


# --- preparing logs -------------------------------------------------------------------------


async def populate(db: Path, owner: str, origins: dict[str, int]) -> None:
    """Write `origins[o]` sales of each origin into `owner`'s log (in a site's folder):
    own ones appended, the others chained and ingested as if replicated, each signed with
    its origin's key as the site holds it (peers refuse what is not)."""
    root = next(p for p in db.parents if (p / "site.json").exists())
    signers = {o: load_signer(root / o / "identity") for o in origins}
    log = await EventLog.open(db, owner, StoreState(), in_scope=holds(owner), signer=signers[owner])
    try:
        for origin, n in origins.items():
            prev, hlc = b"", 1 << 40
            for first in range(1, n + 1, CHUNK):
                bodies = [
                    cash_sale(sku=f"SKU-{i % 300}", receipt=f"{origin}-{i}")
                    for i in range(first, min(n, first + CHUNK - 1) + 1)
                ]
                if origin == owner:
                    await log.append_many(bodies)
                    continue
                events = [
                    msgspec.structs.replace(e, sig=signers[origin].sign(event_hash(e)))
                    for e in chain(origin, bodies, hlc + first, prev, first)
                ]
                prev = event_hash(events[-1])
                result = await log.ingest(events)
                assert not result.rejected, result.rejected[:1]
    finally:
        await log.close()


def head(db: Path, origin: str) -> int:
    """The highest contiguous seq of `origin` that the log `db` holds (0: none)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return _head(conn, origin)
    finally:
        conn.close()


def _head(conn: sqlite3.Connection, origin: str) -> int:
    row = conn.execute("SELECT seq FROM heads WHERE origin = ?", (origin,)).fetchone()
    return int(row[0]) if row else 0


def latency_text(samples: list[float]) -> str:
    p50, p99 = (percentile(samples, q) * 1e3 for q in (50, 99))
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


async def populate_store(mesh: Mesh, rid: str, tills: int, per_till: int) -> None:
    """Fill the log of `rid` (in the mesh's site) with `per_till` sales of each of its
    store's `tills` tills, before it starts."""
    store = rid.split("/")[0]
    db = mesh.site.data_dir(mesh.root, rid) / "log.db"
    db.parent.mkdir(parents=True, exist_ok=True)  # its identity is there
    await populate(db, rid, {f"{store}/t{t}": per_till for t in range(1, tills + 1)})


def raws_of(db: Path, origin: str) -> list[bytes]:
    """The stored bytes of every event of `origin` in the log `db` (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return segments.read_raws(conn, origin, 1, 1 << 40)
    finally:
        conn.close()


async def append_latencies(log: EventLog, appenders: int, per_appender: int) -> list[float]:
    """How long each append took until durable (s), `appenders` appending at once."""
    samples: list[float] = []

    async def worker() -> None:
        for _ in range(per_appender):
            t0 = time.perf_counter()
            await log.append(cash_sale())
            samples.append(time.perf_counter() - t0)

    await asyncio.gather(*[worker() for _ in range(appenders)])
    return samples


# --- catch-up progress ----------------------------------------------------------------------


@dataclass
class Progress:
    rate: float  # events/s, from the first sample showing progress to the last
    first: float  # perf_counter of the first sample showing progress
    # per name of `cpu`: s of its processes' CPU per event over the same span
    cpu_per_event: dict[str, float] = field(default_factory=dict)


async def progress(
    mesh: Mesh,
    rid: str,
    origin: str,
    total: int,
    timeout: float,
    start: int = 0,
    cpu: Callable[[], dict[str, list[psutil.Process]]] | None = None,
) -> Progress:
    """Sample `rid`'s version vector (its API) every 50 ms until it holds `origin` up to
    `total`; how fast it got there from its first step past `start`, and with `cpu`
    (named groups of processes), the CPU each group spent per event meanwhile."""
    samples: list[tuple[float, int, dict[str, float]]] = []
    # the processes, found once their last one runs (the check worker starts at the first
    # big frame): finding them on every sample cost ~3 ms of CPU each (a process scan)
    groups: dict[str, list[psutil.Process]] = {}

    async def done() -> bool:
        vv = (await mesh[rid].status(digest=False))["version_vector"]
        if cpu is not None and (not groups or not all(groups.values())):
            groups.update(cpu())
        used = {name: cpu_seconds(procs) for name, procs in groups.items()}
        samples.append((time.perf_counter(), vv.get(origin, 0), used))
        return samples[-1][1] >= total

    await wait_until(done, f"{rid} to hold {origin} up to {total}", timeout, every=0.05)
    t_first, have_first, cpu_first = next((s for s in samples if s[1] > start), samples[-1])
    t_last, have_last, cpu_last = samples[-1]
    n = have_last - have_first
    if n <= 0:  # all of it arrived between two samples: no rate can be read
        raise AssertionError(f"{rid} took in {origin}'s events between two 50 ms samples")
    used = {name: (cpu_last[name] - cpu_first.get(name, 0.0)) / n for name in cpu_last}
    return Progress(n / (t_last - t_first), t_first, used)


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds the processes have used (their threads included)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system
    return total


# --- in-store propagation -------------------------------------------------------------------


class _Watch:
    """A thread looking at `origin`'s head in each log of `dbs` every WATCH_EVERY s:
    when each seq was first seen in each log (the same look-up for every log, so the
    difference between two logs has the poll's resolution, not its delay)."""

    def __init__(self, dbs: dict[str, Path], origin: str) -> None:
        self.dbs, self.origin = dbs, origin
        self.seen: dict[str, dict[int, float]] = {name: {} for name in dbs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self._last = {name: head(db, self.origin) for name, db in self.dbs.items()}  # before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        conns = {n: sqlite3.connect(f"file:{db}?mode=ro", uri=True) for n, db in self.dbs.items()}
        last = self._last
        try:
            while not self._stop.wait(WATCH_EVERY):
                for name, conn in conns.items():
                    seq, now = _head(conn, self.origin), time.perf_counter()
                    self.seen[name].update(dict.fromkeys(range(last[name] + 1, seq + 1), now))
                    last[name] = max(last[name], seq)
        finally:
            for conn in conns.values():
                conn.close()


async def propagation(mesh: Mesh, a: str, b: str, sales: int) -> list[float]:
    """Sales on till `a` through its API, one at a time 5 ms apart: for each, the time from
    its event in `a`'s log to its event in `b`'s log (both logs watched on disk)."""
    dbs = {rid: mesh.site.data_dir(mesh.root, rid) / "log.db" for rid in (a, b)}
    with _Watch(dbs, a) as watch:
        seqs = []
        for _ in range(sales):
            seqs += [split_id(sale_id)[1] for sale_id in await mesh.sell(a)]
            await asyncio.sleep(0.005)

        async def arrived() -> bool:
            return set(seqs) <= set(watch.seen[b])

        await wait_until(arrived, f"{b} to hold every sale of {a}", 30, every=0.05)
    return [watch.seen[b][s] - watch.seen[a][s] for s in seqs]


# --- catch-up after being away --------------------------------------------------------------


@dataclass
class CatchUpAfter:
    events: int  # appended on the serving till while the other was away
    rate: float  # events/s, the returning till from its first step to done
    resumed: float  # s from its return to its first step


async def catch_up_after(
    mesh: Mesh,
    rid: str,
    source: str,
    n: int,
    away: Callable[[], Awaitable[None]],
    back: Callable[[], Awaitable[None]],
) -> CatchUpAfter:
    """Till `rid` goes `away` (its cable cut, say); meanwhile `n` sales are appended on
    till `source` (stopped, written into its log, started again: the quick way to `n`
    events); `rid` comes `back` and catches up from `source` (and whoever else holds them)."""
    db = mesh.site.data_dir(mesh.root, source) / "log.db"
    start = (await mesh[rid].status(digest=False))["version_vector"].get(source, 0)
    await away()
    assert not mesh[source].stop(), f"{source} would not stop"
    await populate(db, source, {source: n})
    total = head(db, source)
    await mesh.start(source, fresh=False)
    returned = time.perf_counter()
    await back()
    got = await progress(mesh, rid, source, total, 60 + n / 2000, start)
    return CatchUpAfter(n, got.rate, got.first - returned)
