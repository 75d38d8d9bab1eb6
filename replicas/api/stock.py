"""Stock endpoints of the till API: receive, adjust, count, and read levels per SKU.

Stock is kept per store: a replica's stock events move its own store's stock (HQ's
its own, store "hq"), and that is what these endpoints show unless ?store= names
another store whose events the replica holds (HQ: any store; a till: its own and hq).
"""

from __future__ import annotations

import sqlite3
from typing import Annotated

from fastapi import APIRouter, Query, Request

from conflict import queries
from conflict.stock import stock_store
from core.events import Body
from replicas.api import models as m
from replicas.api.auth import made_by
from replicas.api.common import ERRORS, Sku, Till, not_found

__all__ = ["stock_router"]

StoreParam = Annotated[
    str | None,
    Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="default: this replica's"),
]


def _on_hand(conn: sqlite3.Connection, sku: str, store: str) -> int | None:
    """On hand; 0 for a catalog SKU never moved; None for a SKU nothing knows."""
    levels = queries.stock_levels(conn, store=store)
    if sku in levels:
        return levels[sku]
    return 0 if queries.product(conn, sku) is not None else None


def stock_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["stock"], responses=ERRORS)
    own = stock_store(till.replica.replica_id)

    async def move(sku: str, body: Body) -> m.StockOut:
        # Stock may arrive before its product replicates here: no catalog check.
        ev = await till.append(body)
        on_hand = await till.read(lambda c: queries.stock_levels(c, [sku], store=own)[sku])
        return m.StockOut(sku=sku, on_hand=on_hand, event_id=ev.id, hlc=ev.hlc)

    @r.post("/stock/{sku}/receive", status_code=201)
    async def receive(sku: Sku, req: m.StockReceiveIn, request: Request) -> m.StockOut:
        req = req.model_copy(update={"by": made_by(request, req.by, "take a delivery")})
        return await move(sku, req.to_body(sku))

    @r.post("/stock/{sku}/adjust", status_code=201)
    async def adjust(sku: Sku, req: m.StockAdjustIn, request: Request) -> m.StockOut:
        req = req.model_copy(update={"by": made_by(request, req.by, "adjust stock")})
        return await move(sku, req.to_body(sku))

    @r.post("/stock/{sku}/count", status_code=201)
    async def count(sku: Sku, req: m.StockCountIn, request: Request) -> m.StockOut:
        req = req.model_copy(update={"by": made_by(request, req.by, "count stock")})
        return await move(sku, req.to_body(sku))

    @r.get("/stock")
    async def all_stock(store: StoreParam = None) -> list[m.StockLevel]:
        levels = await till.read(lambda c: queries.stock_levels(c, store=store or own))
        return [m.StockLevel(sku=s, on_hand=n) for s, n in levels.items()]

    @r.get("/stock/{sku}")
    async def one_stock(sku: Sku, store: StoreParam = None) -> m.StockLevel:
        on_hand = await till.read(lambda c: _on_hand(c, sku, store or own))
        if on_hand is None:
            raise not_found(f"SKU {sku!r}")
        return m.StockLevel(sku=sku, on_hand=on_hand)

    return r
