"""Shift endpoints of the till API: open, close (each once, under the till's lock), read
a shift's totals.
"""

from __future__ import annotations

import secrets

from fastapi import APIRouter, HTTPException, Request

from conflict import lookups, queries
from replicas.api import models as m
from replicas.api.auth import made_by, person_of
from replicas.api.common import ERRORS, Record, Till, not_found

__all__ = ["shifts_router"]


def shifts_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["shifts"], responses=ERRORS)

    async def totals(shift: str) -> Record:
        return await till.read(lambda c: queries.shift_totals(c, shift))

    @r.post("/shifts", status_code=201)
    async def open_shift(req: m.ShiftOpenIn, request: Request) -> m.ShiftView:
        req = req.model_copy(update={"cashier": person_of(request, req.cashier, "open a shift")})
        shift = req.shift or f"{till.prefix}shift-{secrets.token_hex(4)}"
        async with till.lock:
            if (await totals(shift))["opened_by"] is not None:
                raise HTTPException(409, f"shift {shift!r} is already open")
            await till.append(req.to_body(shift))
            return m.ShiftView.model_validate(await totals(shift))

    @r.post("/shifts/{shift}/close")
    async def close_shift(shift: str, req: m.ShiftCloseIn, request: Request) -> m.ShiftView:
        req = req.model_copy(update={"by": made_by(request, req.by, "close a shift")})
        async with till.lock:
            state = await totals(shift)
            if state["opened_by"] is None:
                raise not_found(f"shift {shift!r}")
            if state["closed_by"] is not None:
                raise HTTPException(409, f"shift {shift!r} is already closed")
            await till.append(req.to_body(shift))
            return m.ShiftView.model_validate(await totals(shift))

    @r.get("/shift")
    async def current_shift() -> m.ShiftView:
        """The shift this till has open (404: none), for a front end that reloads."""
        rid = till.replica.replica_id
        shift = await till.read(lambda c: lookups.open_shift(c, rid))
        if shift is None:
            raise not_found(f"an open shift on {rid}")
        return m.ShiftView.model_validate(await totals(shift))

    @r.get("/shifts/{shift}")
    async def get_shift(shift: str) -> m.ShiftView:
        state = await totals(shift)
        if state["opened_by"] is None and state["closed_by"] is None:
            raise not_found(f"shift {shift!r}")
        return m.ShiftView.model_validate(state)

    return r
