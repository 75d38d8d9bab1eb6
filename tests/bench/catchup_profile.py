"""Where a catch-up's time goes on the receiving till, stage by stage (issue 19).

Run: .venv/bin/python -m tests.bench.catchup_profile [events]

The events are what a catch-up carries: one origin's signed chain (every event signed,
as a till's own log stores them), as envelope bytes in pull-window frames. Printed in
µs/event of thread CPU (robust on a shared machine), best of 3: each checking stage
alone, all of the checking `EventLog.ingest` does before the writer (`check_events` with
the site's keys, in its slices), then the writer's transaction without and with the
fold, the layout's SQLite floor, and the whole log's `ingest_raw` (wall) with one and
two frames in flight. What the wire adds on top is the bench's catch-up / ingest ratio.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
import psutil

from conflict.state import StoreState
from core.checks import CHECK_SLICE, check_events
from core.events import Event, RawEvent, decode_body, decode_event, encode_event, event_hash
from core.keys import KeyRegistry
from core.log import EventLog
from core.signing import Ed25519Signer, new_signing_seed, vouch
from tests.bench.ingest_profile import BATCH, FLOOR_TABLES, per_event, sqlite_floor
from tests.factories import cash_sale, chain

ORIGIN = "s1/t2"


def signed_chain(n: int, signer: Ed25519Signer) -> list[Event]:
    bodies = [cash_sale(sku=f"SKU-{i % 300}", receipt=f"R{i}") for i in range(n)]
    out, prev = [], b""
    for ev in chain(ORIGIN, bodies):
        ev = msgspec.structs.replace(ev, prev=prev)
        h = event_hash(ev)
        out.append(msgspec.structs.replace(ev, sig=signer.sign(h)))
        prev = h
    return out


def checking(evs: list[Event], raws: list[bytes], registry: KeyRegistry) -> None:
    n = len(evs)
    hashes = [event_hash(e) for e in evs]
    items = [RawEvent(decode_event(r), r) for r in raws]
    slices = [
        list(zip(evs[i : i + CHECK_SLICE], hashes[i : i + CHECK_SLICE], strict=True))
        for i in range(0, n, CHECK_SLICE)
    ]
    stages = {
        "decode_event (envelope)": lambda: [decode_event(r) for r in raws],
        "event_hash": lambda: [event_hash(e) for e in evs],
        "encode_event (canonical?)": lambda: [encode_event(e) for e in evs],
        "decode_body (typed, valid)": lambda: [decode_body(e) for e in evs],
        "vouch (1 verify per slice)": lambda: [vouch(s, registry) for s in slices],
        "strip covered sigs, re-encode": lambda: [
            encode_event(msgspec.structs.replace(e, sig=b"")) for e in evs
        ],
        "check_events, all of it": lambda: [
            check_events(items[i : i + CHECK_SLICE], {}, registry) for i in range(0, n, CHECK_SLICE)
        ],
    }
    print(f"checking, before the writer ({n:,} signed events), µs/event thread CPU:")
    for name, fn in stages.items():
        print(f"  {name:<30} {per_event(fn, n):6.2f}")


def writer(evs: list[Event], registry: KeyRegistry, d: Path) -> None:
    """The writer's transaction over checked events, fold off and on, and the floor."""
    from tests.bench.ingest_profile import log_ingest

    print("writer thread, events already checked (µs/event):")
    checked = [
        RawEvent(c.event, c.raw)
        for i in range(0, len(evs), CHECK_SLICE)
        for c in check_events(evs[i : i + CHECK_SLICE], {}, registry)
    ]  # as the writer gets them: the covered events' signatures stripped
    stored = [r.event for r in checked]
    for name, fold in (("transaction, no fold", False), ("transaction + fold", True)):
        w, c = min(log_ingest(d / f"w-{fold}-{k}.db", stored, fold=fold) for k in range(2))
        print(f"  {name:<30} {c:6.2f} cpu  {w:6.2f} wall  ({1e6 / w:,.0f} ev/s)")
    floor = sqlite_floor(d / "w-True-0.db", d / "floor.db", FLOOR_TABLES)
    print(f"  {'SQLite floor (no Python)':<30} {floor:6.2f} wall  ({1e6 / floor:,.0f} ev/s)")


@dataclass
class Whole:
    rate: float  # events/s, wall
    loop: float  # µs/event of CPU on the event loop's thread (checking, when in-process)
    writer: float  # ... on the writer's thread (transaction, fold, SQLite)
    worker: float  # ... in the checking worker process (0: none)

    def __str__(self) -> str:
        return (
            f"{1e6 / self.rate:6.2f} wall ({self.rate:,.0f} ev/s); cpu: loop {self.loop:.1f},"
            f" writer {self.writer:.1f}, worker {self.worker:.1f} µs/event"
        )


def _thread_cpu() -> dict[int, float]:
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


class NoFold(StoreState):
    """The fold's tables, never written: what ingest would cost if the fold were all
    deferred (the bound of folding lazily; issue 19)."""

    def apply(self, conn: object, batch: object) -> None:  # type: ignore[override]
        return None


async def whole(
    raws: list[bytes],
    registry: KeyRegistry,
    d: Path,
    in_flight: int,
    worker: bool,
    fold: StoreState | None = None,
) -> Whole:
    """`ingest_raw` of pull-window frames, `in_flight` at a time; CPU per thread and
    worker (robust on a shared machine, where wall time is what others leave us)."""
    log = await EventLog.open(
        d / f"whole-{in_flight}-{worker}-{type(fold).__name__}.db",
        "s1/t1",
        fold or StoreState(),
        verifier=registry,
        check_in_worker=worker,
    )
    loop_tid = threading.get_native_id()
    try:
        running: list[asyncio.Task[object]] = []
        before = _thread_cpu()
        t0 = time.perf_counter()
        for i in range(0, len(raws), BATCH):
            running.append(asyncio.create_task(log.ingest_raw(raws[i : i + BATCH])))
            if len(running) == in_flight:
                await running.pop(0)
        for task in running:
            await task
        wall = time.perf_counter() - t0
        after = _thread_cpu()
        pids = log._worker.pids() if log._worker is not None else []
        in_worker = sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)
    finally:
        await log.close()
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in after.items()}
    loop_cpu = spent.pop(loop_tid, 0.0)
    n = len(raws) / 1e6
    return Whole(len(raws) / wall, loop_cpu / n, max(spent.values()) / n, in_worker / n)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    signer = Ed25519Signer(new_signing_seed())
    registry = KeyRegistry({ORIGIN: signer.public_key})
    evs = signed_chain(n, signer)
    raws = [encode_event(e) for e in evs]
    print(f"{n:,} events of {sum(map(len, raws)) / n:.0f} bytes each, frames of {BATCH}")
    checking(evs, raws, registry)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        writer(evs, registry, d)
        print("the whole log, EventLog.ingest_raw (wall):")
        for worker in (False, True):
            for k in (1, 2):
                got = asyncio.run(whole(raws, registry, d, k, worker))
                where = "in a worker" if worker else "in-process"
                print(f"  {k} in flight, checked {where:<12} {got}")
        got = asyncio.run(whole(raws, registry, d, 2, True, NoFold()))
        print(f"  {'2 in flight, worker, no fold':<34} {got}")


if __name__ == "__main__":
    main()
