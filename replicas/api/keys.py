"""The replicas' signing keys: HQ revokes a replica whose key or machine is lost, and a
till rotates its key with HQ vouching for the new one.

`POST /keys/{replica}/revoke` (HQ, hq_admin): what that replica wrote after `after_seq`
is still stored and replicated, but no replica folds it into its state
(`core.bodies.KeyRevoked`), and what it wrote before stays. A replacement machine gets
a new replica id.

Rotation, in two steps, so the new private key never leaves the till and the seq it
starts at is the till's own: `POST /keys/rotate` at the till (manager) makes a new key,
signs with it from its next event on and answers its public key and that seq; then
`POST /keys/{replica}/rotate` at HQ (hq_admin) with those two writes `key.rotated`
(`core.bodies.KeyRotated`). Meanwhile the till sells on: its new events are held, not
applied, elsewhere until HQ's word arrives; from then on the old key is refused at and
past that seq everywhere. HQ alone writes both (ingest refuses them from any other
origin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from broker.errors import InvalidReplicaId
from broker.subjects import parse_replica_id
from core.events import HQ, KeyRevoked, KeyRotated
from replicas.api import models as m
from replicas.api.common import ERRORS, Till, hlc_iso
from replicas.api.models import NoPanText

__all__ = ["RevokeIn", "RotateIn", "RotatedOut", "keys_router"]


class RevokeIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    after_seq: Annotated[int, Field(ge=0, le=2**63 - 1)] = Field(
        description="the last of its events that stays: those after it are never state"
    )
    reason: NoPanText = ""


class RotateIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    public_key: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{43}$")] = Field(
        description="the till's new public key, as its POST /keys/rotate answered"
    )
    from_seq: Annotated[int, Field(ge=1, le=2**63 - 1)] = Field(
        description="the first of its events the new key signs, as the till answered"
    )
    reason: NoPanText = ""


class RotatedOut(BaseModel):
    replica: str
    public_key: str
    from_seq: int


def _till_id(replica: str, what: str) -> str:
    try:
        rid = parse_replica_id(replica)
    except InvalidReplicaId:
        raise HTTPException(422, "not a till's replica id (e.g. s1/t2)") from None
    if rid.is_hq:
        raise HTTPException(422, f"HQ cannot {what} itself")
    return replica


def keys_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["keys"], responses=ERRORS)

    @r.post("/keys/rotate", status_code=201)
    async def rotate_own() -> RotatedOut:
        if till.replica.replica_id == HQ:
            raise HTTPException(422, "HQ's key is rotated with a new site bundle")
        if till.replica.log.signer is None:
            raise HTTPException(
                409, "this site signs no events: add signing keys first (tillmesh site keys --add)"
            )
        public_key, from_seq = await till.replica.rotate_key()
        return RotatedOut(replica=till.replica.replica_id, public_key=public_key,
                          from_seq=from_seq)  # fmt: skip

    @r.post("/keys/{replica:path}/rotate", status_code=201)
    async def rotate(replica: str, req: RotateIn) -> m.EventOut:
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "HQ vouches for a rotated key")
        body = KeyRotated(replica=_till_id(replica, "rotate"), public_key=req.public_key,
                          from_seq=req.from_seq, reason=req.reason)  # fmt: skip
        ev = await till.append(body)
        return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))

    @r.post("/keys/{replica:path}/revoke", status_code=201)
    async def revoke(replica: str, req: RevokeIn) -> m.EventOut:
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "replicas are revoked at HQ")
        replica = _till_id(replica, "revoke")
        ev = await till.append(KeyRevoked(replica=replica, after_seq=req.after_seq,
                                          reason=req.reason))  # fmt: skip
        return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))

    return r
