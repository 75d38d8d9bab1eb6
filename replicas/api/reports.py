"""`GET /reports/...`: the figures of `tillmesh report`, over HTTP, for BI tools at HQ.

The same queries (`conflict.reports`) on the replica's read snapshot: HQ's API answers
for every store, a till's for its own. Query parameters mirror the CLI's options.
HQ on PostgreSQL serves the same routes over `replicas.hq.reports` (`report_routes`
takes the read function and the module of report queries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from types import ModuleType
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query

from conflict import reports
from conflict.errors import ReportError
from conflict.reports import SALES_GROUPS, Window
from replicas.api.common import ERRORS, Till

__all__ = ["Read", "report_routes", "reports_router"]

Rows = list[dict[str, Any]]
# Runs a report query on a read connection (SQLite snapshot or PostgreSQL), off the loop.
Read = Callable[[Callable[[Any], Rows]], Awaitable[Rows]]
_Since = Annotated[datetime | None, Query(description="ISO 8601; a naive time is in utc_offset")]
_Until = Annotated[datetime | None, Query(description="ISO 8601, exclusive")]
# The world's offsets run from UTC-12:00 to UTC+14:00; a day or more is no offset.
_Offset = Annotated[int, Query(ge=-12 * 60, le=14 * 60, description="minutes east of UTC")]
_Store = Annotated[str | None, Query(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


def _window(
    store: _Store = None,
    since: _Since = None,
    until: _Until = None,
    utc_offset: _Offset = 0,
) -> Window:
    """The query parameters every windowed report takes (a FastAPI dependency)."""
    try:
        return Window.between(since, until, store, utc_offset)
    except ReportError as e:
        raise HTTPException(422, str(e)) from e


_Window = Annotated[Window, Depends(_window)]


def reports_router(till: Till) -> APIRouter:
    # The log's clock, read when a report asks (an app made only to describe itself, for
    # its OpenAPI spec, has no log).
    return report_routes(till.read, reports, lambda: till.replica.log.wall_ms())


def report_routes(read: Read, source: ModuleType, wall_ms: Callable[[], int]) -> APIRouter:
    """The /reports routes over `read` and a module of report queries (`source`);
    `wall_ms` is the clock ages are measured by."""
    r = APIRouter(prefix="/reports", tags=["reports"], responses=ERRORS)

    @r.get("/sales")
    async def sales(
        window: _Window,
        by: Annotated[
            str, Query(description=f"comma-separated: {', '.join(SALES_GROUPS)}")
        ] = "store,day",
    ) -> Rows:
        groups = [g.strip() for g in by.split(",") if g.strip()]
        try:
            return await read(lambda c: source.sales_report(c, groups, window))
        except ReportError as e:
            raise HTTPException(422, str(e)) from e

    @r.get("/payments")
    async def payments(window: _Window) -> Rows:
        return await read(lambda c: source.payments_report(c, window))

    @r.get("/tax")
    async def tax(window: _Window) -> Rows:
        """Tax collected per store, day and rate, less what refunds gave back."""
        return await read(lambda c: source.tax_report(c, window))

    @r.get("/items")
    async def items(window: _Window, top: Annotated[int, Query(ge=1, le=10_000)] = 20) -> Rows:
        return await read(lambda c: source.items_report(c, window, top))

    @r.get("/exposure")
    async def exposure(store: _Store = None) -> Rows:
        """Offline card payments not yet captured, declined or expired, per store and till."""
        now_ms = wall_ms()
        return await read(lambda c: source.offline_exposure(c, store, now_ms))

    @r.get("/declines")
    async def declines(store: _Store = None) -> Rows:
        """Offline card payments declined or expired, by store, outcome and decision."""
        return await read(lambda c: source.declines_report(c, store))

    @r.get("/stock")
    async def stock(
        store: _Store = None,
        below: Annotated[int | None, Query(ge=-(10**12), le=10**12)] = None,
    ) -> Rows:
        return await read(lambda c: source.stock_report(c, store, below))

    @r.get("/prices")
    async def prices(store: _Store = None) -> Rows:
        return await read(lambda c: source.prices_report(c, store))

    return r
