"""HQ's writes taken on any worker: a worker K > 0 hands each to worker 0, HQ's writer.

HQ's own events (products, the chain's prices, card floor limits, conflict resolutions,
key revocations and rotations) are one hash chain, HQ's origin, and a chain has one
writer: worker 0, which signs them. So that an integrator may send HQ's writes to
whichever worker they reach (the issue's "authored through the HQ API on any node"),
the other workers take the same routes and forward each request over HTTP to worker 0
(`Site.api_url("hq")`), with the caller's credentials: the worker authorises it first
(its own token check, the same tokens file), worker 0 authorises it again and answers,
and that answer goes back as it is. With worker 0 not running, the answer is a 503
that says where HQ's writer should be.

    app.include_router(forward_router("http://10.0.0.5:8080"))
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable

import httpx
from fastapi import APIRouter, HTTPException, Request, Response

from replicas.api.common import ERRORS

__all__ = ["FORWARDED", "forward_router"]

# (method, path) of every HQ write: what worker 0 alone can author.
FORWARDED: tuple[tuple[str, str], ...] = (
    ("PUT", "/catalog/{sku}"),
    ("PUT", "/catalog/{sku}/price"),
    ("PUT", "/cards/limits"),
    ("POST", "/conflicts/{conflict_id}/resolve"),
    ("POST", "/keys/rotate"),  # worker 0 answers why HQ's own key is not rotated here
    ("POST", "/keys/{replica:path}/revoke"),
    ("POST", "/keys/{replica:path}/rotate"),
)
# Headers that describe the caller's request, handed on; hop-by-hop ones are not.
_PASSED = ("authorization", "content-type", "accept")
TIMEOUT_S = 10.0  # a write is one transaction at worker 0: seconds mean it is not there


def forward_router(front_url: str, verify: ssl.SSLContext | bool = True) -> APIRouter:
    """HQ's write routes, each forwarded to worker 0 at `front_url` (its certificate
    checked by `verify` when the site's APIs speak HTTPS)."""
    r = APIRouter(tags=["HQ writes (forwarded to worker 0)"], responses=ERRORS)
    for method, path in FORWARDED:
        r.add_api_route(
            path, _forwarder(front_url, verify), methods=[method],
            summary=f"{method} {path} at worker 0, HQ's one writer",
        )  # fmt: skip
    return r


def _forwarder(
    front_url: str, verify: ssl.SSLContext | bool
) -> Callable[[Request], Awaitable[Response]]:
    async def forward(request: Request) -> Response:
        url = front_url.rstrip("/") + request.url.path
        headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED}
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S, verify=verify) as client:
                answer = await client.request(
                    request.method, url, params=request.query_params,
                    content=await request.body(), headers=headers,
                )  # fmt: skip
        except httpx.HTTPError as e:
            raise HTTPException(
                503,
                f"HQ's writes are made by worker 0 (`tillmesh hq --db ... --shard 0/N`), "
                f"which did not answer at {front_url} ({type(e).__name__}): start it there, "
                "on any machine that serves that address",
            ) from e
        kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
        return Response(answer.content, answer.status_code, headers=kept)

    return forward
