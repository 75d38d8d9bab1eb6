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
origin). HQ on PostgreSQL serves the same routes (`hq_keys_router`), its worker 0
writing the events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from broker.errors import InvalidReplicaId
from broker.subjects import parse_replica_id
from core.events import HQ, Body, Event, KeyRevoked, KeyRotated
from replicas.api import models as m
from replicas.api.common import ERRORS, Till, hlc_iso
from replicas.api.models import NoPanText

__all__ = ["RevokeIn", "RotateIn", "RotatedOut", "hq_keys_router", "keys_router"]


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
    """The key routes of a replica's API: a till rotates its own; HQ writes the rest."""
    return _keys_routes(till, till.append)


def hq_keys_router(append: Callable[[Body], Awaitable[Event]]) -> APIRouter:
    """The same routes where HQ is no `Till` (HQ on PostgreSQL: `append` is worker 0's
    log, HQ's one writer), answering as HQ on SQLite does."""
    return _keys_routes(None, append)


def _event_out(ev: Event) -> m.EventOut:
    return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))


def _keys_routes(till: Till | None, append: Callable[[Body], Awaitable[Event]]) -> APIRouter:
    """`till` None: HQ without a till's replica."""
    r = APIRouter(tags=["keys"], responses=ERRORS)

    def at_hq() -> bool:
        return till is None or till.replica.replica_id == HQ

    @r.post("/keys/rotate", status_code=201)
    async def rotate_own() -> RotatedOut:
        if till is None or at_hq():
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
        if not at_hq():
            raise HTTPException(403, "HQ vouches for a rotated key")
        body = KeyRotated(replica=_till_id(replica, "rotate"), public_key=req.public_key,
                          from_seq=req.from_seq, reason=req.reason)  # fmt: skip
        return _event_out(await append(body))

    @r.post("/keys/{replica:path}/revoke", status_code=201)
    async def revoke(replica: str, req: RevokeIn) -> m.EventOut:
        if not at_hq():
            raise HTTPException(403, "replicas are revoked at HQ")
        replica = _till_id(replica, "revoke")
        return _event_out(await append(KeyRevoked(replica=replica, after_seq=req.after_seq,
                                                  reason=req.reason)))  # fmt: skip

    return r
