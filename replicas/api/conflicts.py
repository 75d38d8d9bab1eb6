"""Conflict endpoints of the till/HQ API: list what detection finds, and resolve.

A resolution is appended through the running replica's own log (the database is
held open by it), then replicates like any event, so the conflict shows resolved
on every replica with who, when and why. `POST /conflicts/catalog:<sku>/resolve` with
`{"action": "supersede", "supersedes": [ids]}` overrides catalog writes whatever their
HLC (a write dated far ahead); at HQ that takes the hq_admin role, as HQ's prices do.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec
from fastapi import APIRouter, HTTPException, Request

from conflict.detect import detect, open_conflict_count
from conflict.errors import ConflictError, UnknownConflict
from conflict.policies import Policies, from_state
from conflict.resolve import ResolvingLog, resolve
from core.events import HQ
from replicas.api.auth import made_by
from replicas.api.common import ERRORS
from replicas.api.models import ResolveIn  # strict, like every request model
from replicas.api.tokens import Role

__all__ = ["ResolveIn", "conflicts_router", "count_open"]


def count_open(conn: sqlite3.Connection) -> int:
    return open_conflict_count(conn, from_state(conn))


def conflicts_router(log: ResolvingLog) -> APIRouter:
    r = APIRouter(tags=["conflicts"], responses=ERRORS)

    @r.get("/conflicts")
    async def list_conflicts(open: bool = False) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            found = detect(conn, from_state(conn), open_only=open)
            return [msgspec.to_builtins(c) for c in found]

        return await log.read(query)

    @r.post("/conflicts/{conflict_id}/resolve", status_code=201)
    async def resolve_conflict(
        conflict_id: str, body: ResolveIn, request: Request
    ) -> dict[str, Any]:
        by = made_by(request, body.by, "resolve conflicts")
        if not by:  # the open demo: no credential to name
            raise HTTPException(422, "say who decides: by")
        role: Role | None = request.state.role
        if (
            body.action == "supersede"
            and log.replica_id == HQ
            and (role is None or role < Role.hq_admin)
        ):  # at HQ a catalog override undoes the chain's catalog: as for its prices
            raise HTTPException(403, "overriding HQ's catalog needs the hq_admin role")
        policies: Policies = await log.read(from_state)
        try:
            events = await resolve(
                log,
                policies,
                conflict_id,
                body.action,
                by,
                body.reason,
                price=body.price,
                count=body.count,
                supersedes=body.supersedes,
            )
        except UnknownConflict as e:
            raise HTTPException(404, str(e)) from e
        except ConflictError as e:
            raise HTTPException(409, str(e)) from e
        return {"conflict": conflict_id, "events": [ev.id for ev in events]}

    return r
