"""Issue 14 benchmarks: what signing adds to a durable sale, and what verification costs
a catch-up. Signed and unsigned are measured in the same run, on the same machine."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from conflict.state import StoreState
from core.events import Event, encode_event, event_hash
from core.log import EventLog
from core.signing import Ed25519Signer, KeyRegistry, new_signing_seed
from tests.bench.conftest import percentile, table
from tests.bench.measure import append_latencies
from tests.factories import cash_sale, chain

pytestmark = pytest.mark.bench
TILLS = [f"s1/t{k}" for k in range(2, 7)]
SIGNERS = {rid: Ed25519Signer(new_signing_seed()) for rid in ["s1/t1", *TILLS]}
REGISTRY = KeyRegistry({rid: s.public_key for rid, s in SIGNERS.items()})


class CountingRegistry:
    def __init__(self) -> None:
        self.checks = 0

    def verify(self, ev: Event, digest: bytes) -> None:
        self.checks += 1
        REGISTRY.verify(ev, digest)


async def test_bench_signing_a_durable_sale(tmp_path: Path) -> None:
    signer = SIGNERS["s1/t1"]
    digest = event_hash(chain("s1/t1", [cash_sale()])[0])
    t0 = time.perf_counter()
    for _ in range(2000):
        signer.sign(digest)
    sign_us = (time.perf_counter() - t0) / 2000 * 1e6
    rows = [("ed25519 sign (PyNaCl), one hash", f"{sign_us:.1f} µs", "per sale")]
    for appenders in (1, 8):
        for name, key in (("unsigned", None), ("signed", signer), ("unsigned", None)):
            db = tmp_path / f"{name}{appenders}-{len(rows)}.db"
            log = await EventLog.open(db, "s1/t1", StoreState(), signer=key)
            samples = await append_latencies(log, appenders, max(100, 800 // appenders))
            await log.close()
            rows.append(
                (
                    f"durable sale, {appenders} concurrent, {name}",
                    f"p50 {percentile(samples, 50) * 1e3:.2f} ms",
                    f"p99 {percentile(samples, 99) * 1e3:.2f} ms",
                )
            )
    table("signing on the append path (WAL, synchronous=FULL)", rows)


def _signed_chains(n: int) -> list[bytes]:
    """`n` events of five tills, each signed by its till, interleaved by frames."""
    raws: list[bytes] = []
    for rid in TILLS:
        events = chain(rid, [cash_sale(receipt=f"{rid}-{i}") for i in range(n // len(TILLS))])
        key = SIGNERS[rid]
        raws += [
            encode_event(msgspec.structs.replace(e, sig=key.sign(event_hash(e)))) for e in events
        ]
    return raws


async def _catch_up(db: Path, raws: list[bytes], verifier: object | None) -> float:
    log = await EventLog.open(db, "s1/t1", StoreState(), verifier=verifier)  # type: ignore[arg-type]
    try:
        t0 = time.perf_counter()
        for i in range(0, len(raws), 2000):  # frames of 2000, as a pull serves them
            result = await log.ingest_raw(raws[i : i + 2000])
            assert not result.rejected, result.rejected[:1]
        return len(raws) / (time.perf_counter() - t0)
    finally:
        await log.close()


async def test_bench_verifying_a_catch_up(tmp_path: Path) -> None:
    n = 100_000
    raws = _signed_chains(n)
    counting = CountingRegistry()
    unsigned = signed = 0.0
    for run in range(2):  # alternated, best of two: the machine is shared and noisy
        unsigned = max(unsigned, await _catch_up(tmp_path / f"plain{run}.db", raws, None))
        counting.checks = 0
        signed = max(signed, await _catch_up(tmp_path / f"signed{run}.db", raws, counting))
    table(
        f"catch-up of {n:,} signed events (5 tills, frames of 2,000)",
        [
            ("ingest, signatures not checked", f"{unsigned:,.0f} ev/s", "baseline, same run"),
            ("ingest, signatures checked", f"{signed:,.0f} ev/s", f"{signed / unsigned:.2f}x"),
            ("signature checks made", f"{counting.checks:,}", f"1 per {n // counting.checks:,} ev"),
        ],
    )
