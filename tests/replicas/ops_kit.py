"""Real replica databases for the ops tests: EventLogs with the real StoreState fold,
exchanging events by `read_range` + `ingest` (a partition = not exchanging).

A site is HQ plus tills of store s1 (and one of s2, so scope matters), with a site.json
in the same folder (`site init`): every log signs its events with its replica's key and
checks its peers', and the ops commands find the keys above the databases. Time is a
manual wall clock shared by all logs, so "14:00-14:20" means what it says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from conflict import queries
from conflict.state import StoreState
from core.clock import HybridClock
from core.events import (
    Body,
    Payment,
    ProductUpserted,
    SaleCompleted,
    SaleLine,
    SaleVoided,
    StockCounted,
    StockReceived,
)
from core.log import EventLog
from replicas.cli.main import main
from replicas.keyfiles import load_signer, write_signing_key
from replicas.site import Site as SiteModel
from replicas.site import init_site, load_site
from replicas.sync.protocol import holds

T = TypeVar("T")
STORES = {"s1": ["t1", "t2", "t3"], "s2": ["x1"]}
T0 = int(datetime(2024, 5, 4, 14, 0, tzinfo=UTC).timestamp() * 1000)
MINUTE = 60_000


def at(minutes: float) -> str:
    """ISO time `minutes` after 14:00 UTC on the test day."""
    return datetime.fromtimestamp((T0 + minutes * MINUTE) / 1000, UTC).isoformat()


def sale(receipt: str, sku: str = "A", qty: int = 1, price: int = 250) -> SaleCompleted:
    return SaleCompleted(
        receipt=receipt,
        lines=[SaleLine(sku=sku, qty=qty, unit_price=price)],
        payments=[Payment(method="cash", amount=qty * price)],
    )


def product(sku: str, price: int) -> ProductUpserted:
    return ProductUpserted(sku=sku, name=f"product {sku}", price=price)


def received(sku: str, qty: int) -> StockReceived:
    return StockReceived(sku=sku, qty=qty)


def counted(sku: str, count: int) -> StockCounted:
    return StockCounted(sku=sku, count=count)


def void(sale_id: str) -> SaleVoided:
    return SaleVoided(sale=sale_id, reason="wrong item")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


@dataclass
class Site:
    """Replica databases in one directory, opened as EventLogs only while in use."""

    root: Path
    now_ms: int = T0 + 45 * MINUTE  # after the store day: later scripts never look skewed
    logs: dict[str, EventLog] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.root / "site.json").exists():
            _fixed_keys(self.root, init_site(self.root, STORES))
        self.site, self.keys_root = load_site(self.root), self.root  # where keys stay

    def path(self, rid: str) -> Path:
        return self.root / (rid.replace("/", "-") + ".db")

    def wall(self) -> int:
        return self.now_ms

    def at(self, minutes: float) -> None:
        self.now_ms = T0 + int(minutes * MINUTE)

    async def open(self, *rids: str) -> None:
        for rid in rids:
            self.logs[rid] = await EventLog.open(
                self.path(rid), rid, StoreState(), clock=HybridClock(self.wall),
                in_scope=holds(rid), wall_ms=self.wall,
                signer=load_signer(self.site.identity_dir(self.keys_root, rid)),
                verifier=self.site.key_registry(),
            )  # fmt: skip

    async def close(self) -> None:
        for log in self.logs.values():
            await log.close()
        self.logs.clear()

    async def append(self, rid: str, *bodies: Body) -> list[str]:
        events = await self.logs[rid].append_many(list(bodies))
        return [ev.id for ev in events]

    async def pull(self, dst: str, src: str) -> int:
        """dst takes what src serves of dst's scope (read_range + ingest)."""
        a, b = self.logs[dst], self.logs[src]
        taken = 0
        for origin, seq in b.version_vector().items():
            have = a.head(origin)[0]
            if a.in_scope(origin) and seq > have:
                raws = await b.read_range(origin, have + 1, 100_000)
                result = await a.ingest_raw(raws, src)
                assert not result.rejected, result.rejected
                taken += len(result.accepted)
        return taken

    async def sync(self, *rids: str) -> None:
        """Everyone pulls from everyone, twice: transitive within the group."""
        for _ in range(2):
            for dst in rids:
                for src in rids:
                    if dst != src:
                        await self.pull(dst, src)


def _fixed_keys(root: Path, site: SiteModel) -> None:
    """Signing keys derived from the replica ids: the same events sign to the same bytes
    in every run, so the runbook's real output (sizes, digests) is reproducible."""
    for rid in site.replicas:
        seed = hashlib.blake2b(f"ops-kit {rid}".encode(), digest_size=32).digest()
        site.signing_keys[rid] = write_signing_key(site.identity_dir(root, rid), seed)
    (root / "site.json").write_text(site.model_dump_json(indent=2) + "\n")


def with_site(root: Path, script: Callable[[Site], Awaitable[T]]) -> T:
    """Run `script` on a site and close every log (files are then quiescent)."""

    async def go() -> T:
        site = Site(root)
        try:
            return await script(site)
        finally:
            await site.close()

    return run(go())


def digest(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return queries.state_digest(conn)


def count_events(path: Path, where: str = "", params: tuple[object, ...] = ()) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT count(*) FROM events {where}", params).fetchone()[0])


async def store_day(site: Site) -> dict[str, list[str]]:
    """HQ publishes products; tills s1/t1, s1/t2 sell 14:00-14:40; s2/x1 sells too.

    Everyone syncs at 14:30 (HQ included); after that HQ is cut off and the tills of
    s1 keep syncing with each other. Returns the event ids appended, per replica.
    """
    await site.open("hq", "s1/t1", "s1/t2", "s2/x1")
    ids: dict[str, list[str]] = {r: [] for r in site.logs}
    site.at(0)
    ids["hq"] += await site.append("hq", product("A", 250), product("B", 400))
    await site.sync("hq", "s1/t1", "s1/t2", "s2/x1")
    site.at(1)
    ids["s1/t1"] += await site.append("s1/t1", received("A", 50), received("B", 20))
    for minute in range(2, 40, 3):
        site.at(minute)
        ids["s1/t1"] += await site.append("s1/t1", sale(f"T1-{minute}", "A", 2))
        site.at(minute + 1)
        ids["s1/t2"] += await site.append("s1/t2", sale(f"T2-{minute}", "B", 1, 400))
        ids["s2/x1"] += await site.append("s2/x1", sale(f"X1-{minute}", "A", 1))
        if minute == 20:
            ids["s1/t2"] += await site.append("s1/t2", counted("A", 30))
        if minute < 30:
            await site.sync("hq", "s1/t1", "s1/t2", "s2/x1")
        else:
            await site.sync("s1/t1", "s1/t2")
    site.at(41)
    ids["s1/t1"] += await site.append("s1/t1", void(ids["s1/t1"][3]))
    await site.sync("s1/t1", "s1/t2")
    return ids


# --- fixtures and CLI helpers (imported by the test modules) ------------------------------


@dataclass
class Built:
    root: Path
    ids: dict[str, list[str]]

    def db(self, rid: str) -> Path:
        return self.root / (rid.replace("/", "-") + ".db")


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, Any]:
    code, out, err = cli(capsys, *argv, "--json")
    assert out, err
    return code, json.loads(out)


def reference_digest(root: Path, source: Path, where: str, params: tuple[object, ...]) -> str:
    """Digest of a fresh log that ingested exactly the events of `source` matching `where`."""
    with closing(sqlite3.connect(source)) as conn:
        raws = [r for (r,) in conn.execute(f"SELECT raw FROM events {where} ORDER BY origin, seq",
                                           params)]  # fmt: skip
    path = root / "reference.db"

    async def build() -> None:
        log = await EventLog.open(path, "hq", StoreState())
        try:
            result = await log.ingest_raw(raws, "test")
            assert len(result.accepted) == len(raws), result
        finally:
            await log.close()

    run(build())
    try:
        return digest(path)
    finally:
        path.unlink()
