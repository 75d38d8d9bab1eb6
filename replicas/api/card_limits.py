"""`/cards/limits`: the floor limits for card payments a till takes offline.

HQ sets them (`PUT`, hq_admin, at HQ only: ingest refuses `card.limits_set` from any
other origin), for one store or for every store without its own; they replicate to
every till like the catalog. `GET` answers the limits in force for a store (a till's
own by default), HQ's built-in defaults until any are set.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from conflict import cards
from core.events import HQ, CardLimitsSet, store_of
from replicas.api import models as m
from replicas.api.auth import made_by
from replicas.api.common import ERRORS, Till, event_out
from replicas.api.models import NoPanText

__all__ = ["CardLimitsIn", "CardLimitsView", "LimitsStore", "card_limits_router", "limits_body"]

_Store = Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")]
# GET's ?store= (a till's own store by default, every store's limits at HQ)
LimitsStore = Annotated[str | None, Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]


class CardLimitsView(BaseModel):
    per_payment: Annotated[int, Field(ge=0, le=10**12)] = Field(description="minor units")
    till_total: Annotated[int, Field(ge=0, le=10**12)] = Field(
        description="minor units a till may hold unforwarded"
    )
    till_count: Annotated[int, Field(ge=0, le=10**6)] = Field(
        description="payments a till may hold unforwarded"
    )
    max_age_s: Annotated[int, Field(ge=60, le=90 * 86_400)] = Field(
        description="forwarded within this many seconds, or expired"
    )


class CardLimitsIn(CardLimitsView):
    model_config = ConfigDict(strict=True, extra="forbid")
    store: _Store = Field("", description="'' for every store without limits of its own")
    by: NoPanText = ""


def limits_body(req: CardLimitsIn, by: str) -> CardLimitsSet:
    """The event HQ appends for `req` (also HQ's on PostgreSQL: `replicas.hq.api`)."""
    return CardLimitsSet(
        per_payment=req.per_payment, till_total=req.till_total, till_count=req.till_count,
        max_age_s=req.max_age_s, store=req.store, by=by,
    )  # fmt: skip


def card_limits_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["cards"], responses=ERRORS)

    @r.put("/cards/limits", status_code=201)
    async def set_limits(req: CardLimitsIn, request: Request) -> m.EventOut:
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "floor limits are set at HQ")
        body = limits_body(req, made_by(request, req.by, "set limits"))
        return event_out(await till.append(body))

    @r.get("/cards/limits")
    async def get_limits(store: LimitsStore = None) -> CardLimitsView:
        name = store or store_of(till.replica.replica_id) or ""
        limits = await till.read(lambda c: cards.card_limits(c, name))
        return CardLimitsView(**limits._asdict())

    return r
