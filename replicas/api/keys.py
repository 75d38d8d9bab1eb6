"""`POST /keys/{replica}/revoke`: HQ revokes a replica whose key or machine is lost.

What that replica wrote after `after_seq` is still stored and replicated, but no replica
folds it into its state (`core.bodies.KeyRevoked`), and what it wrote before stays. HQ
alone writes revocations (ingest refuses them from any other origin), with the
hq_admin role. A replacement machine gets a new replica id.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from broker.errors import InvalidReplicaId
from broker.subjects import parse_replica_id
from core.events import HQ, KeyRevoked
from replicas.api import models as m
from replicas.api.common import ERRORS, Till, hlc_iso
from replicas.api.models import NoPanText

__all__ = ["RevokeIn", "keys_router"]


class RevokeIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    after_seq: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(
        description="the last of its events that stays: those after it are never state"
    )
    reason: NoPanText = ""


def keys_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["keys"], responses=ERRORS)

    @r.post("/keys/{replica:path}/revoke", status_code=201)
    async def revoke(replica: str, req: RevokeIn) -> m.EventOut:
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "replicas are revoked at HQ")
        try:
            rid = parse_replica_id(replica)
        except InvalidReplicaId:
            raise HTTPException(422, "not a till's replica id (e.g. s1/t2)") from None
        if rid.is_hq:
            raise HTTPException(422, "HQ cannot revoke itself")
        ev = await till.append(KeyRevoked(replica=replica, after_seq=req.after_seq,
                                          reason=req.reason))  # fmt: skip
        return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))

    return r
