"""HQ on PostgreSQL with two ingest workers, real processes over real NATS.

Tills of two stores sell through their APIs; `tillmesh hq --db ... --shard 0/2` and
`--shard 1/2` each ingest their store's tills (s2 -> worker 0, s1 -> worker 1): every
acknowledged sale is in PostgreSQL exactly once and every till gets HQ's receipt. HQ's
catalog (worker 0's origin; a price sent to worker 1 is forwarded to worker 0) reaches
the tills of worker 1's store; worker 1 serves `/healthz`, `/metrics` of its own (its
ingest counted there) and the database's catalog and reports, and worker 0's
dashboard shows every till online, worker 1's from what it shares. Then both workers
stop, the tills sell a backlog, and worker 1 is SIGKILLed while it catches up: started
again, it resumes from the database's heads, and nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import Mesh, wait_until
from tests.e2e.hq_pg import WorkerProc

STORES = {"s1": ["t1", "t2"], "s2": ["t1"]}
BACKLOG = 1500  # sales per s1 till while HQ is down


def _ingested(scrape: httpx.Response) -> float:
    assert scrape.status_code == 200, scrape.text
    return sum(
        s.value
        for family in text_string_to_metric_families(scrape.text)
        for s in family.samples
        if s.name == "tillmesh_events_ingested_total"
    )


async def _dashboard_sees_every_till(mesh: Mesh, w0: WorkerProc) -> bool:
    """Worker 0's dashboard: the tills worker 1 hears (s1's) too, from `hq_links`; the
    day's sales from PostgreSQL; the open conflicts from the fold's state (`folded.py`)."""
    data = (await mesh.http.get(f"{w0.url}/dashboard/data")).json()
    tills = {t["till"]: t for s in data["stores"] for t in s["tills"]}
    assert sorted(tills) == sorted(mesh.tills)
    assert isinstance(data["totals"]["open_conflicts"], int) and data["chain_conflicts"] == 0
    online = all(t["online"] and t["last_seen_s"] is not None for t in tills.values())
    return online and data["totals"]["sales"] == len(mesh.oracle.sales)


def _pg(dsn: str, sql: str) -> Any:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql.encode()).fetchone()
        assert row is not None
        return row if len(row) > 1 else row[0]


async def _holds_every_sale_once(mesh: Mesh, dsn: str) -> bool:
    n, distinct, gross = _pg(dsn, "SELECT count(*), count(DISTINCT id), COALESCE(sum(total), 0)"
                                  " FROM hq_sales")  # fmt: skip
    assert n == distinct, f"{n - distinct} sales doubled in PostgreSQL"
    return (n, gross) == (len(mesh.oracle.sales), mesh.oracle.gross)


async def _tills_have_hq_receipts(mesh: Mesh) -> bool:
    statuses = await asyncio.gather(*(mesh[t].status(digest=False) for t in mesh.tills))
    return all(s["unsynced_to_hq"] == 0 for s in statuses)


def _heads_match(mesh: Mesh, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        heads = dict(conn.execute("SELECT origin, seq FROM hq_heads").fetchall())
        events = conn.execute("SELECT count(*) FROM hq_events").fetchone()
    assert events is not None and events[0] == sum(heads.values())
    for origin, head in mesh.oracle.heads().items():
        assert heads.get(origin, 0) >= head, origin


@pytest.fixture
async def site(tmp_path: Path, pg_dsn: str) -> Any:
    mesh = Mesh(tmp_path, STORES)
    workers = [WorkerProc(mesh, pg_dsn, 0, 2), WorkerProc(mesh, pg_dsn, 1, 2)]
    mesh.procs["hq"] = workers[0]
    mesh.procs["hq[1/2]"] = workers[1]
    try:
        yield mesh, workers
    finally:
        assert await mesh.close() == []


async def test_two_workers_hold_every_sale_once_and_survive_sigkill(
    site: tuple[Mesh, list[WorkerProc]], pg_dsn: str
) -> None:
    mesh, (w0, w1) = site
    for w in (w0, w1):
        w.spawn(fresh=True)
    await asyncio.gather(w0.wait_serving(), w1.wait_serving())
    await mesh.start(*mesh.tills)

    r = await mesh.http.put(f"{w0.url}/catalog/TEA", json={"name": "Tea", "price": 250})
    assert r.status_code == 200, r.text
    # sent to worker 1, written by worker 0 (HQ's origin has one writer): `forward.py`
    r = await mesh.http.put(f"{w1.url}/catalog/TEA/price", json={"price": 275})
    assert r.status_code == 200 and r.json()["event_id"] == "hq:2", r.text
    assert r.json()["product"]["price"] == 275
    await mesh.sell_everywhere(mesh.tills, rounds=5)

    async def settled() -> bool:
        return await _holds_every_sale_once(mesh, pg_dsn) and await _tills_have_hq_receipts(mesh)

    await wait_until(settled, "every sale at HQ once, every till with HQ's receipt", 60)

    async def tea_at_s1() -> bool:  # HQ's origin, written by worker 0, served to s1 by 1
        r = await mesh.http.get(f"{mesh['s1/t2'].url}/catalog/TEA")
        return r.status_code == 200 and r.json()["price"] == 275

    await wait_until(tea_at_s1, "HQ's catalog at a till of worker 1's store", 30)
    for path in ("/catalog/TEA", "/reports/sales?by=store"):  # any worker reads the database
        a, b = await mesh.http.get(f"{w0.url}{path}"), await mesh.http.get(f"{w1.url}{path}")
        assert a.status_code == b.status_code == 200 and a.json() == b.json(), (path, b.text)
    assert (await mesh.http.get(f"{w1.url}/healthz")).json()["ok"] is True

    async def w1_counted_s1() -> bool:  # every event of s1's tills, and only those
        s1_events = _pg(pg_dsn, "SELECT sum(seq) FROM hq_heads WHERE store = 's1'")
        return _ingested(await mesh.http.get(f"{w1.url}/metrics")) == s1_events

    await wait_until(w1_counted_s1, "worker 1's /metrics to count s1's events", 10)
    await wait_until(
        lambda: _dashboard_sees_every_till(mesh, w0), "every till online on HQ's dashboard", 20
    )

    assert not w0.stop() and not w1.stop()
    await asyncio.gather(*(mesh.sell(t, BACKLOG) for t in ("s1/t1", "s1/t2")))
    before = _pg(pg_dsn, "SELECT count(*) FROM hq_sales WHERE store = 's1'")
    backlog_end = before + 2 * BACKLOG

    w0.spawn(fresh=True)
    w1.spawn(fresh=True)
    await w0.wait_serving()

    async def midway() -> bool:
        n = _pg(pg_dsn, "SELECT count(*) FROM hq_sales WHERE store = 's1'")
        assert n < backlog_end, "worker 1 caught up before it could be killed"
        return n > before

    await wait_until(midway, "worker 1 partway through the backlog", 60, 0.002)
    w1.kill(signal.SIGKILL)
    await asyncio.to_thread(w1.popen.wait, 10)  # type: ignore[union-attr]
    killed_at = _pg(pg_dsn, "SELECT count(*) FROM hq_sales WHERE store = 's1'")
    assert before < killed_at < backlog_end

    w1.spawn(fresh=True)
    await w1.wait_serving()
    await wait_until(settled, "the backlog at HQ once, after the SIGKILL", 90)
    _heads_match(mesh, pg_dsn)
