"""Helpers for the till API tests (no tests here): a replica handle over a real log with
canned sync answers, an in-process client for the real app (open, or with tokens
issued), and sale builders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi.routing import APIRoute

from conflict.state import StoreState
from core.events import HQ, Body, decode_body, decode_event, parse_event_id
from core.log import EventLog
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from replicas.api.app import create_app
from replicas.api.auth import Access
from replicas.api.tokens import TokenRecord, TokenStore
from replicas.cache import StateCache
from replicas.dashboard import mount_dashboard
from replicas.metrics import ReplicaMetrics, metrics_router
from replicas.payments.adapter import CardProcessor
from replicas.payments.reversals import PendingReversals
from tests.factories import chain

__all__ = [
    "TILL",
    "Api",
    "FakeReplica",
    "SpecOnly",
    "api_routes",
    "cash",
    "client_for",
    "event_body",
    "one_cola",
    "open_log",
    "sell",
    "token_api",
]

TILL = "s1/t1"


@dataclass
class FakeReplica:
    """A ReplicaHandle without network: the real log, canned sync answers."""

    replica_id: str
    log: EventLog
    is_online: bool = False
    unsynced: int = 0
    peer_holders: list[str] = field(default_factory=list)  # peers that hold every event
    uplink_names: list[str] = field(default_factory=list)  # a till's uplinks (metrics)
    processor: CardProcessor | None = None  # e.g. an HttpAcquirer to a real acquirer process
    reversals: PendingReversals | None = None  # owed card reversals (a real SQLite file)

    def sync_status(self) -> dict[str, object]:
        return {}

    def card_processor(self) -> CardProcessor | None:
        return self.processor

    def online(self) -> bool:
        return self.is_online

    async def rotate_key(self) -> tuple[str, int]:
        signer = Ed25519Signer(new_signing_seed(), tagged=True)
        from_seq = await self.log.switch_signer(signer, lambda n: None)
        return encode_public_key(signer.public_key), from_seq

    def unsynced_to_hq(self) -> int:
        return self.unsynced

    def holders(self, origin: str, seq: int) -> list[str]:
        here = self.log.version_vector().get(origin, 0) >= seq
        return sorted({*self.peer_holders, *([self.replica_id] if here else [])})


async def open_log(path: Path, replica_id: str = TILL) -> EventLog:
    return await EventLog.open(path, replica_id, StoreState())


async def from_hq(log: EventLog, *bodies: Body) -> None:
    """Catalog events as HQ writes them, replicated into `log` (a till may not write
    products: ingest refuses them from any origin but HQ)."""
    if log.replica_id == HQ:
        await log.append_many(list(bodies))
        return
    seq, prev = log.head(HQ)
    events = chain(HQ, list(bodies), first_hlc=log.clock.now(), prev=prev, first_seq=seq + 1)
    result = await log.ingest(events, peer=HQ)
    assert not result.rejected, result.rejected


def client_for(replica: FakeReplica) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(replica))
    return httpx.AsyncClient(transport=transport, base_url="http://till")


def cash(amount: int) -> dict[str, Any]:
    return {"method": "cash", "amount": amount}


def one_cola(**extra: Any) -> dict[str, Any]:
    return {"lines": [{"sku": "COLA", "qty": 1}], "payments": [cash(150)], **extra}


async def sell(client: httpx.AsyncClient, **sale: Any) -> dict[str, Any]:
    sale.setdefault("lines", [{"sku": "COLA", "qty": 2}])
    sale.setdefault("payments", [cash(300)])
    r = await client.post("/sales", json=sale)
    assert r.status_code == 201, r.text
    return dict(r.json())


class SpecOnly:
    """Enough of a replica for the app to describe itself: its routes and OpenAPI spec
    (no request is served)."""

    def __init__(self, replica_id: str = TILL) -> None:
        self.replica_id, self.log = replica_id, None


class Api:
    """A client of the real app with tokens issued: `call(who, ...)` sends the token
    issued as `who` (None: no token)."""

    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, str], store: TokenStore):
        self.client, self.tokens, self.store = client, tokens, store

    async def call(
        self, who: str | None, method: str, url: str, body: Any = None
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        return await self.client.request(method, url, json=body, headers=headers)

    def record(self, who: str) -> TokenRecord:
        """The stored record of the token issued as `who`."""
        token_id = self.tokens[who].split("_")[1]
        (found,) = [r for r in self.store.records() if r.id == token_id]
        return found


@asynccontextmanager
async def token_api(
    log: EventLog, store: TokenStore, tokens: dict[str, str], replica_id: str = TILL
) -> AsyncIterator[Api]:
    """The real app over `log`, its API closed to all but the tokens of `store`, with
    `/metrics` and HQ's dashboard routes as a replica serves them."""
    replica = FakeReplica(replica_id, log)
    app = create_app(replica, access=Access(store, loopback_only=True))
    cache = StateCache(log)
    app.include_router(metrics_router(replica, ReplicaMetrics(), cache))
    mount_dashboard(app, replica, {"s1": ["t1", "t2"]}, cache)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://till") as client:
        yield Api(client, tokens, store)


async def event_body(log: EventLog, event_id: str) -> Body:
    """The body of a stored event, checked to be written with the schema it needs."""
    origin, seq = parse_event_id(event_id)
    (raw,) = await log.read_range(origin, seq, 1)
    ev = decode_event(raw)
    body = decode_body(ev)
    assert ev.schema == body.min_schema(), (ev.schema, body)
    return body


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, inside included routers too (FastAPI keeps those wrapped)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += api_routes(route.original_router.routes)
    return found
