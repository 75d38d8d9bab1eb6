"""Catalog endpoints of the till API: list and read products, define them (HQ only),
set prices: at HQ the chain price (hq_admin), at a till its store's override (a
manager), which that store's tills sell at and no other store sees. Each product shows
`price` (what this replica's store sells at), `chain_price` and the store `overrides`
in effect apart (HQ: every store's; a till: its own store's).
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request

from conflict import queries
from conflict.stock import stock_store
from core.events import HQ, Body
from replicas.api import models as m
from replicas.api.auth import made_by
from replicas.api.common import ERRORS, Sku, Till, hlc_iso, not_found
from replicas.api.tokens import Role

__all__ = ["catalog_router"]


def catalog_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["catalog"], responses=ERRORS)
    own = stock_store(till.replica.replica_id)  # the store whose price a till sells at

    async def write(sku: str, body: Body) -> m.CatalogOut:
        ev = await till.append(body)
        product = await till.read(lambda c: queries.product(c, sku, own))
        view = m.ProductView.model_validate(product) if product else None
        return m.CatalogOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc), product=view)

    @r.get("/catalog")
    async def list_catalog() -> list[m.ProductView]:
        return [
            m.ProductView.model_validate(p)
            for p in await till.read(lambda c: queries.catalog(c, own))
        ]

    @r.get("/catalog/{sku}")
    async def get_product(sku: Sku) -> m.ProductView:
        product = await till.read(lambda c: queries.product(c, sku, own))
        if product is None:
            raise not_found(f"SKU {sku!r}")
        return m.ProductView.model_validate(product)

    @r.put("/catalog/{sku}")
    async def upsert_product(sku: Sku, req: m.ProductIn, request: Request) -> m.CatalogOut:
        # Products are HQ's to define; a till only sells what replicated to it.
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "products are defined at HQ; a till may only set prices")
        req = req.model_copy(update={"by": made_by(request, req.by, "define products")})
        return await write(sku, req.to_body(sku))

    @r.put("/catalog/{sku}/price")
    async def set_price(sku: Sku, req: m.PriceIn, request: Request) -> m.CatalogOut:
        # At a till: its store's override (a store manager's change), never the chain's
        # or another store's. At HQ: the chain price, the catalog role's. The price
        # policy decides between concurrent ones, identically on every replica.
        role: Role | None = request.state.role
        if till.replica.replica_id == HQ and (role is None or role < Role.hq_admin):
            raise HTTPException(403, "HQ's prices are the chain's: that needs the hq_admin role")
        if await till.read(lambda c: queries.product(c, sku, own)) is None:
            raise not_found(f"SKU {sku!r}")
        req = req.model_copy(update={"by": made_by(request, req.by, "set prices")})
        return await write(sku, req.to_body(sku))

    return r
