"""Helpers for the till API tests (no tests here): a replica handle over a real log with
canned sync answers, an in-process client for the real app, and sale builders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conflict.state import StoreState
from core.log import EventLog
from replicas.api.app import create_app

__all__ = ["TILL", "FakeReplica", "SpecOnly", "cash", "client_for", "one_cola", "open_log", "sell"]

TILL = "s1/t1"


@dataclass
class FakeReplica:
    """A ReplicaHandle without network: the real log, canned sync answers."""

    replica_id: str
    log: EventLog
    is_online: bool = False
    unsynced: int = 0
    peer_holders: list[str] = field(default_factory=list)  # peers that hold every event

    def sync_status(self) -> dict[str, object]:
        return {}

    def online(self) -> bool:
        return self.is_online

    def unsynced_to_hq(self) -> int:
        return self.unsynced

    def holders(self, origin: str, seq: int) -> list[str]:
        here = self.log.version_vector().get(origin, 0) >= seq
        return sorted({*self.peer_holders, *([self.replica_id] if here else [])})


async def open_log(path: Path, replica_id: str = TILL) -> EventLog:
    return await EventLog.open(path, replica_id, StoreState())


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
