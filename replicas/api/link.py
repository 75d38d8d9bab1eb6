"""`PUT /link/hq`: switch a till's leaf link to HQ off and on, and `GET` its state.

Selling never depends on it; what changes is whether this till's nats-server keeps
its leaf connection to HQ. Switching it off on every till of a store cuts the store
from HQ alone (drills, maintenance, a metered link) while its tills keep their routes.
"""

from __future__ import annotations

from typing import Protocol

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict

from replicas.api.common import ERRORS

__all__ = ["HqLink", "LinkControl", "link_router"]


class LinkControl(Protocol):
    async def set_hq_link(self, enabled: bool) -> bool: ...

    def hq_link_enabled(self) -> bool: ...


class HqLink(BaseModel):
    # Strict like every request model: "no" or 0 is refused, not read as a bool.
    model_config = ConfigDict(strict=True, extra="forbid")

    enabled: bool


def link_router(replica: LinkControl) -> APIRouter:
    r = APIRouter(tags=["link"], responses=ERRORS)

    @r.get("/link/hq")
    async def get_link() -> HqLink:
        return HqLink(enabled=replica.hq_link_enabled())

    @r.put("/link/hq")
    async def put_link(link: HqLink) -> HqLink:
        if not await replica.set_hq_link(link.enabled):
            raise HTTPException(409, "this replica has no leaf link to HQ")
        return HqLink(enabled=replica.hq_link_enabled())

    return r
