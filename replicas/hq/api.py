"""HQ's HTTP API when HQ runs on PostgreSQL (served by ingest worker 0).

What HQ's API is for, over the PostgreSQL read model: health, status (the whole
database's version vector, this worker's sync, the offline card exposure), `/metrics`
(as every replica's), the catalog (HQ defines products and the chain's prices: HQ's own
events, appended by worker 0, which owns HQ's origin), the card floor limits and the
replicas' keys (`/keys/*`: revocations and rotations; the same), a shift's figures
(`/shifts/{id}`) and the reports (`/reports/*`, the same routes and figures as on
SQLite). Conflicts (listed and resolved), the state digest and `GET /sales/{id}` read
the fold's own state, kept beside HQ (`folded.py`). The same token policy as every
replica's API (`replicas.api.auth.POLICY`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from conflict import queries
from conflict.detect import open_conflict_count
from conflict.policies import from_state
from core.events import Body
from replicas.api import models as m
from replicas.api.app import STATIC_DIR, exposure_view, install_errors
from replicas.api.auth import Access, authorize, made_by
from replicas.api.card_limits import CardLimitsIn, CardLimitsView, LimitsStore, limits_body
from replicas.api.common import ERRORS, Sku, hlc_iso, not_found
from replicas.api.conflicts import conflicts_router
from replicas.api.keys import hq_keys_router
from replicas.api.reports import report_routes
from replicas.api.tokens import Role
from replicas.hq import reports as pg_reports
from replicas.hq.connect import connect_readonly
from replicas.hq.folded import FoldedState, FoldingLog
from replicas.hq.forward import forward_router
from replicas.hq.store import PgLog
from replicas.metrics import ReplicaMetrics
from replicas.metrics.snapshot import snapshot_of

__all__ = ["PgReads", "Worker", "create_hq_app", "create_worker_app"]

T = TypeVar("T")
Conn = psycopg.Connection[Any]


class Worker(Protocol):
    """What the API needs of a running ingest worker."""

    replica_id: str
    log: PgLog

    def sync_status(self) -> dict[str, object]: ...

    def online(self) -> bool: ...

    def holders(self, origin: str, seq: int) -> list[str]: ...


class PgReads:
    """Report queries on a read-only connection of their own, in a worker thread."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()

    async def read(self, fn: Callable[[Conn], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(self._run, fn)

    def _run(self, fn: Callable[[Conn], T]) -> T:
        if self._conn is None or self._conn.closed:
            self._conn = connect_readonly(self.dsn)
        with self._conn.transaction():
            return fn(self._conn)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _heads(conn: Conn) -> dict[str, int]:
    return {o: int(s) for o, s in conn.execute("SELECT origin, seq FROM hq_heads").fetchall()}


async def _product(reads: PgReads, sku: str) -> m.ProductView | None:
    rows = await reads.read(lambda c: pg_reports.catalog(c, sku))
    return m.ProductView.model_validate(rows[0]) if rows else None


def _catalog_reads_router(reads: PgReads) -> APIRouter:
    """The catalog and the floor limits as the read model has them: any worker's."""
    r = APIRouter(tags=["catalog"], responses=ERRORS)

    @r.get("/catalog")
    async def list_catalog() -> list[m.ProductView]:
        return [m.ProductView.model_validate(p) for p in await reads.read(pg_reports.catalog)]

    @r.get("/catalog/{sku}")
    async def get_product(sku: Sku) -> m.ProductView:
        found = await _product(reads, sku)
        if found is None:
            raise not_found(f"SKU {sku!r}")
        return found

    @r.get("/cards/limits", tags=["cards"])
    async def get_limits(store: LimitsStore = None) -> CardLimitsView:
        limits = await reads.read(lambda c: pg_reports.card_limits(c, store or ""))
        return CardLimitsView(**limits._asdict())

    return r


def _writes_router(worker: Worker, reads: PgReads) -> APIRouter:
    """HQ's own events: products, the chain's prices, card floor limits (`replicas.api.
    card_limits`), appended by worker 0, which owns HQ's origin (the other workers
    forward these routes to it: `forward.py`)."""
    r = APIRouter(tags=["catalog"], responses=ERRORS)

    async def write(sku: str, body: Body) -> m.CatalogOut:
        ev = await worker.log.append(body)
        return m.CatalogOut(
            event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc), product=await _product(reads, sku)
        )

    @r.put("/catalog/{sku}")
    async def upsert_product(sku: Sku, req: m.ProductIn, request: Request) -> m.CatalogOut:
        req = req.model_copy(update={"by": made_by(request, req.by, "define products")})
        return await write(sku, req.to_body(sku))

    @r.put("/catalog/{sku}/price")
    async def set_price(sku: Sku, req: m.PriceIn, request: Request) -> m.CatalogOut:
        role: Role | None = request.state.role
        if role is None or role < Role.hq_admin:
            raise HTTPException(403, "HQ's prices are the chain's: that needs the hq_admin role")
        if await _product(reads, sku) is None:
            raise not_found(f"SKU {sku!r}")
        req = req.model_copy(update={"by": made_by(request, req.by, "set prices")})
        return await write(sku, req.to_body(sku))

    @r.put("/cards/limits", status_code=201, tags=["cards"])
    async def set_limits(req: CardLimitsIn, request: Request) -> m.EventOut:
        ev = await worker.log.append(limits_body(req, made_by(request, req.by, "set limits")))
        return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))

    return r


def _shifts_router(reads: PgReads) -> APIRouter:
    """A shift's figures as HQ on SQLite gives them (`GET /shifts/{shift}`); shifts are
    opened and closed at tills, so HQ serves no writes of them."""
    r = APIRouter(tags=["shifts"], responses=ERRORS)

    @r.get("/shifts/{shift}")
    async def get_shift(shift: str) -> m.ShiftView:
        state = await reads.read(lambda c: pg_reports.shift_totals(c, shift))
        if state["opened_by"] is None and state["closed_by"] is None:
            raise not_found(f"shift {shift!r}")
        return m.ShiftView.model_validate(state)

    return r


def _state_router(worker: Worker, folded: FoldedState) -> APIRouter:
    """Reads of the fold's state (`folded.py`), as HQ on SQLite serves them."""
    r = APIRouter(tags=["state"], responses=ERRORS)

    @r.get("/state/digest")
    async def digest() -> m.DigestOut:
        return m.DigestOut(digest=await folded.read(queries.state_digest))

    @r.get("/sales/{sale_id:path}", tags=["sales"])
    async def get_sale(sale_id: str) -> m.SaleView:
        found = await folded.read(lambda c: queries.sale(c, sale_id))
        if found is None:
            raise not_found(f"sale {sale_id!r}")
        view = m.SaleView.model_validate(found)
        held_by = worker.holders(view.origin, view.seq)
        view.delivery = m.DeliveryView(held_by=held_by, at_hq="hq" in held_by)
        return view

    return r


def _status_router(worker: Worker, reads: PgReads, folded: FoldedState | None) -> APIRouter:
    r = APIRouter(tags=["status"], responses=ERRORS)

    @r.get("/status")
    async def status(digest: bool = True, conflicts: bool = True) -> dict[str, Any]:
        """As HQ on SQLite: `?digest=false&conflicts=false` skip the fold's state."""
        now_ms = worker.log.wall_ms()
        heads, summary, exposure = await reads.read(
            lambda c: (
                _heads(c),
                pg_reports.sales_totals(c),
                pg_reports.offline_exposure(c, None, now_ms),
            )
        )
        dig, open_conflicts = None, None
        if folded is not None and (digest or conflicts):
            dig, open_conflicts = await folded.read(
                lambda c: (
                    queries.state_digest(c) if digest else None,
                    open_conflict_count(c, from_state(c)) if conflicts else None,
                )
            )
        return {
            "replica_id": worker.replica_id, "store": "postgresql", "online": worker.online(),
            "version_vector": heads, "events": sum(heads.values()), "sales": summary,
            "sync": worker.sync_status(), "card_exposure": exposure_view(exposure).model_dump(),
            "digest": dig, "open_conflicts": open_conflicts,
            # events PostgreSQL holds that the digest and conflicts do not cover yet
            "folded_behind": None if folded is None else folded.behind,
        }  # fmt: skip

    return r


def _health_router(worker: Worker, reads: PgReads) -> APIRouter:
    r = APIRouter(tags=["status"], responses=ERRORS)

    @r.get("/healthz")
    async def healthz() -> m.HealthOut:
        """The worker runs and reaches the database."""
        await reads.read(lambda c: c.execute("SELECT 1").fetchone())
        return m.HealthOut(ok=True, replica_id=worker.replica_id)

    return r


def _metrics_router(worker: Any, reads: PgReads, metrics: ReplicaMetrics) -> APIRouter:
    """`GET /metrics` as every replica serves it, its state figures read here."""
    r = APIRouter(tags=["metrics"])

    @r.get("/metrics", response_class=Response)
    async def scrape() -> Response:
        stats = await worker.log.stats()
        money, deferred = await reads.read(
            lambda c: (pg_reports.sales_totals(c), pg_reports.deferred_cards(c))
        )
        summary = queries.SalesSummary(**money)
        metrics.update(snapshot_of(worker, stats, summary, deferred))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return r


def create_hq_app(
    worker: Worker,
    reads: PgReads,
    access: Access | None = None,
    metrics: ReplicaMetrics | None = None,
    folded: FoldedState | None = None,
) -> FastAPI:
    app = _app(
        "tillmesh HQ (PostgreSQL)",
        "HQ's API over its PostgreSQL read model: catalog, status, reports.",
        worker, reads, access,
    )  # fmt: skip
    app.include_router(_status_router(worker, reads, folded))
    app.include_router(_catalog_reads_router(reads))
    app.include_router(_writes_router(worker, reads))
    app.include_router(hq_keys_router(worker.log.append))
    app.include_router(_shifts_router(reads))
    app.include_router(report_routes(reads.read, pg_reports, worker.log.wall_ms))
    if folded is not None:
        app.include_router(_state_router(worker, folded))
        app.include_router(conflicts_router(FoldingLog(folded, worker.log)))
    if metrics is not None:
        app.include_router(_metrics_router(worker, reads, metrics))
    # the dashboard's script and style (`replicas.dashboard`), served by HQ itself
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def create_worker_app(
    worker: Worker,
    reads: PgReads,
    metrics: ReplicaMetrics,
    front_url: str,
    access: Access | None = None,
    verify: ssl.SSLContext | bool = True,
) -> FastAPI:
    """What ingest worker K > 0 serves: `/healthz` and `/metrics` (its own ingest and sync
    counters; the database's figures, the same on every worker), the catalog, floor
    limits and reports from the read model, and HQ's writes, forwarded to worker 0 at
    `front_url` (`forward.py`). Status, the dashboard and conflicts are worker 0's."""
    app = _app(
        "tillmesh HQ ingest worker (PostgreSQL)",
        "One HQ ingest worker: health, metrics, the read model's catalog and reports, and "
        "HQ's writes handed to worker 0.",
        worker, reads, access,
    )  # fmt: skip
    app.include_router(_metrics_router(worker, reads, metrics))
    app.include_router(_catalog_reads_router(reads))
    app.include_router(report_routes(reads.read, pg_reports, worker.log.wall_ms))
    app.include_router(forward_router(front_url, verify))
    return app


def _app(
    title: str, description: str, worker: Worker, reads: PgReads, access: Access | None
) -> FastAPI:
    """An app every request of which is authorised, with tillmesh's errors and /healthz."""
    app = FastAPIOffline(
        title=title, description=description, version="1", dependencies=[Depends(authorize)]
    )
    app.state.access = access or Access(None)
    install_errors(app)
    app.include_router(_health_router(worker, reads))
    return app
