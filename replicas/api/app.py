"""The till's local HTTP API and the till page it serves.

The cashier talks to this process only, never to the network: every write becomes
one event appended to the replica's own log, and the response is sent only after
`log.append` returned, i.e. once the event (and the state it folds into) is durable.
Reads are queries on a read snapshot of the local state. Replication happens beside
this, in the sync engine; the API only reports on it through `ReplicaHandle`.

Errors: pydantic 422s (with the offending input stripped, so a mistyped card number
is never echoed or logged), the event layer's `SchemaViolation` as 422, 404 for an
unknown sale/SKU/shift, 409 when the request contradicts the local state (unknown SKU
without a price, a used receipt, a shift closed here, double void, void after refund,
over-refund, a sale at HQ), 403 for catalog writes a till may not make, 503 when the
log is unusable. Clients never see a stack trace.

This module assembles the app (error handlers, status, the page); each group of
endpoints is a router of its own: sales, stock, catalog, shifts,
reports, conflicts (in this folder), over the shared `Till` of `common`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from conflict import queries
from conflict.reports import offline_exposure
from core.batch import ClockAhead
from core.clock import hlc_ms
from core.errors import SchemaViolation, StorageError, TillmeshError
from core.events import HQ, store_of
from core.pan import safe_to_show
from core.verify import evidence
from replicas.api import models as m
from replicas.api.auth import Access, authorize
from replicas.api.card_limits import card_limits_router
from replicas.api.catalog import catalog_router
from replicas.api.common import ERRORS, ReplicaHandle, Shop, Till, hlc_iso
from replicas.api.conflicts import conflicts_router, count_open
from replicas.api.keys import keys_router
from replicas.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from replicas.api.reports import reports_router
from replicas.api.sales import sales_router
from replicas.api.shifts import shifts_router
from replicas.api.stock import stock_router

__all__ = ["STATIC_DIR", "ReplicaHandle", "create_app"]  # ReplicaHandle: from common

STATIC_DIR = Path(__file__).parent / "static"
_log = logging.getLogger(__name__)


# --- errors ----------------------------------------------------------------------------


def install_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_error)
    app.add_exception_handler(SchemaViolation, _event_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(TillmeshError, _internal_error)
    app.add_exception_handler(Exception, _internal_error)


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # pydantic's errors carry the offending `input`: dropped, so a card number typed
    # into the wrong field is never sent back (or into a proxy's logs).
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _event_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SchemaViolation)
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    path = safe_to_show(request.url.path)
    _log.error("event log unavailable on %s %s", request.method, path, exc_info=exc)
    return JSONResponse({"detail": "the till's event log is unavailable"}, status_code=503)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    path = safe_to_show(request.url.path)
    _log.error("unhandled error on %s %s", request.method, path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


# --- status and page -------------------------------------------------------------------


def _status_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["status"], responses=ERRORS)
    replica = till.replica

    @r.get("/status")
    async def status(digest: bool = True, conflicts: bool = True) -> m.StatusOut:
        # The page polls with ?digest=false&conflicts=false: hashing all state and running
        # conflict detection every 2 s is wasted work.
        stats = await replica.log.stats()
        store, now_ms = store_of(replica.replica_id), replica.log.wall_ms()
        summary, dig, open_conflicts, kept, exposure = await till.read(
            lambda c: (
                queries.sales_summary(c),
                queries.state_digest(c) if digest else None,
                count_open(c) if conflicts else None,
                evidence(c) if conflicts else None,
                offline_exposure(c, store, now_ms),
            )
        )
        return m.StatusOut(
            replica_id=replica.replica_id, online=replica.online(),
            version_vector=replica.log.version_vector(), events=stats.events,
            pending=stats.pending, quarantined=stats.quarantined,
            clock_ahead=_clock_ahead(replica.log.clock_ahead, replica.log.wall_ms()),
            unsynced_to_hq=replica.unsynced_to_hq(), sales=m.SalesSummaryView(**summary._asdict()),
            sync=replica.sync_status(), digest=dig, open_conflicts=open_conflicts,
            evidence=kept, stale_snapshot=replica.log.stale_snapshot,
            card_exposure=exposure_view(exposure),
        )  # fmt: skip

    @r.get("/shop")
    async def shop() -> m.ShopOut:
        """What the till page prints on receipts and how it shows prices."""
        store = store_of(replica.replica_id) or HQ
        return m.ShopOut(
            replica_id=replica.replica_id, store=store,
            store_name=till.shop.store_name or store, tax_mode=till.shop.tax_mode,
        )  # fmt: skip

    @r.get("/state/digest")
    async def digest() -> m.DigestOut:
        return m.DigestOut(digest=await till.read(queries.state_digest))

    @r.get("/healthz")
    async def healthz() -> m.HealthOut:
        await till.read(lambda c: c.execute("SELECT 1").fetchone())  # the log answers reads
        return m.HealthOut(ok=True, replica_id=replica.replica_id)

    return r


def exposure_view(rows: list[dict[str, Any]]) -> m.ExposureView:
    """`/status`'s card exposure: the `offline_exposure` rows summed (HQ on PostgreSQL too)."""
    ages = [r["oldest_age_s"] for r in rows]
    return m.ExposureView(
        payments=sum(r["payments"] for r in rows), amount=sum(r["amount"] for r in rows),
        oldest_age_s=max(ages) if ages else None,
    )  # fmt: skip


def _clock_ahead(seen: dict[str, ClockAhead], now_ms: int) -> dict[str, m.ClockAheadView]:
    return {
        origin: m.ClockAheadView(
            events=a.events,
            newest=hlc_iso(a.newest_hlc),
            ahead_ms=max(hlc_ms(a.newest_hlc) - now_ms, 0),
        )
        for origin, a in sorted(seen.items())
    }


def _mount_page(app: FastAPI) -> None:
    # Served by the till itself, no CDN: the page must work with the network cut.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    # At the root, so it may serve the page ("/") as well as its assets (a worker's scope
    # is its own path and below).
    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "sw.js", media_type="text/javascript",
            headers={"Cache-Control": "no-cache"},
        )  # fmt: skip

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def create_app(
    replica: ReplicaHandle,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    access: Access | None = None,
    shop: Shop | None = None,
) -> FastAPI:
    """The till's HTTP API over a running replica; OpenAPI at /openapi.json, docs at /docs.
    Request bodies over `max_body_bytes` are refused (413) before they are read; every
    route checks the caller's token against `auth.POLICY` (`access`: open if None);
    sales are taxed per the site's tax mode (`shop`, `replicas.api.tax`)."""
    till = Till(replica, shop)
    # FastAPIOffline: /docs and /redoc from assets installed with tillmesh, not a CDN (a
    # till whose internet is down is when integrators most need them).
    app = FastAPIOffline(
        title=f"tillmesh till {replica.replica_id}",
        description="Local till API: every write is an event in this replica's durable log.",
        version="1",
        dependencies=[Depends(authorize)],
    )
    app.state.access = access or Access(None)
    install_errors(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    routers = (
        sales_router, stock_router, catalog_router, shifts_router, reports_router, keys_router,
        card_limits_router,
    )  # fmt: skip
    for router in (*routers, _status_router):
        app.include_router(router(till))
    app.include_router(conflicts_router(replica.log))
    _mount_page(app)
    return app
