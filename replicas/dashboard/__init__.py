"""HQ's live dashboard: `GET /dashboard` (the page) and `GET /dashboard/data` (its JSON).

The page (`replicas/api/static/dashboard.*`) is served by HQ itself with everything it
needs, the chart drawn in SVG by its own script: no CDN, so it works on a back-office
network with no internet. It polls the JSON every 2 s with a read_only token (the
page asks for one once, as the till page does); the JSON is `figures.dashboard` of
HQ's sync status and state. HQ on PostgreSQL gives its own figures and links (the
read model's reports; every ingest worker's link view, `replicas.hq.links`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import FileResponse

from conflict.reports import Window
from replicas.api.app import STATIC_DIR
from replicas.api.common import ERRORS, ReplicaHandle
from replicas.cache import StateCache
from replicas.dashboard.figures import dashboard, link_view, state_figures, today

__all__ = ["mount_dashboard"]

Figures = Callable[[Window], Awaitable[dict[str, Any]]]  # today's window -> figures
Links = Callable[[], Awaitable[Mapping[str, dict[str, Any]]]]  # origin -> link view

_Offset = Annotated[int, Query(ge=-12 * 60, le=14 * 60, description="minutes east of UTC")]


def mount_dashboard(
    app: FastAPI,
    replica: ReplicaHandle,
    stores: Mapping[str, Sequence[str]],
    cache: StateCache | Figures,
    *,
    leaves_known: bool = True,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    links: Links | None = None,
) -> None:
    """Add the dashboard's routes to HQ's app. `leaves_known`: HQ's hub is one node,
    so every till's leaf link shows on HQ's own nats-server. `cache`: the state's
    (SQLite), or a function giving the figures of a window; `links`: default the
    replica's own sync status."""
    figures_of = _from_state(cache) if isinstance(cache, StateCache) else cache

    async def links_now() -> Mapping[str, dict[str, Any]]:
        if links is not None:
            return await links()
        return link_view(replica.sync_status(), leaves_known)

    r = APIRouter(tags=["dashboard"], responses=ERRORS)

    @r.get("/dashboard", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})

    @r.get("/dashboard/data")
    async def data(utc_offset: _Offset = 0) -> dict[str, Any]:
        at = now()
        window = today(at, utc_offset)
        figures = await figures_of(window)
        return dashboard(stores, await links_now(), figures, window, at)

    app.include_router(r)


def _from_state(cache: StateCache) -> Figures:
    async def figures_of(window: Window) -> dict[str, Any]:
        return await cache.read(("dashboard", window), lambda c: state_figures(c, window))

    return figures_of
