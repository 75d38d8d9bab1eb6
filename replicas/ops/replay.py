"""Replay (`tillmesh log replay`): the in-scope events up to a cut, folded one by one.

The fold runs in a scratch database (`ops.new_scratch`), so the replica's own state
is never touched; each step records running sales totals and the stock of the SKUs
the event touched.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

from conflict import lookups, queries
from conflict.policies import state_fold
from conflict.stock import stock_store, store_moved_by
from core.errors import TillmeshError
from core.events import (
    HQ,
    Body,
    Event,
    RefundIssued,
    SaleCompleted,
    SaleVoided,
    StockAdjusted,
    StockCounted,
    StockReceived,
    decode_body,
    decode_event,
)
from core.fold import Accepted
from replicas.errors import SelectsNothing
from replicas.ops.common import (
    Cut,
    Progress,
    Scope,
    cut_rows,
    new_scratch,
    replica_of,
)

__all__ = ["Replay", "ReplayStep", "event_cut", "replay", "replayed_store"]


@dataclass
class ReplayStep:
    event: Event
    flags: int
    sales: int  # running count of sales folded so far
    gross: int  # running gross of those sales
    stock: dict[str, int]  # on hand after this event, for the SKUs it touched


@dataclass
class Replay:
    cut: Cut | None
    events: int = 0
    steps: list[ReplayStep] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    # On hand as of the cut, per store shown: the replayed store only, or every store
    # (HQ, no --store). Never summed over stores: that is no store's stock.
    stock: dict[str, dict[str, int]] = field(default_factory=dict)


def event_cut(conn: sqlite3.Connection, origin: str, seq: int) -> Cut:
    row = conn.execute(
        "SELECT hlc FROM events WHERE origin = ? AND seq = ?", (origin, seq)
    ).fetchone()
    if row is None:
        raise SelectsNothing("replay", f"no event {origin}:{seq} in this log")
    return int(row[0]), origin, seq


def replayed_store(conn: sqlite3.Connection, store: str | None) -> str | None:
    """Whose stock a replay shows: `store` if given, else a till's own store; None at HQ
    (or in a database naming no replica), which shows every store apart."""
    if store is not None:
        return store
    replica = replica_of(conn)
    return None if replica in (None, HQ) else stock_store(replica)


def replay(
    conn: sqlite3.Connection,
    cut: Cut | None,
    scope: Scope,
    progress: Progress | None = None,
    store: str | None = None,
) -> Replay:
    """Fold the in-scope events up to `cut` one by one, recording running totals.

    The final stock is `store`'s, or every store's apart if None (`replayed_store`).
    """
    fold = state_fold(conn)
    scratch = new_scratch(conn, fold, scope, cut)
    try:
        result = Replay(cut)
        summary = queries.sales_summary(scratch)
        sales, gross = summary.sales, summary.gross
        for raw, flags, _ in cut_rows(conn, scope, cut):
            ev = decode_event(raw)
            body = _body_or_none(ev)
            if body is not None:
                fold.apply(scratch, [Accepted(ev, body, flags)])
                if isinstance(body, SaleCompleted):
                    sales, gross = sales + 1, gross + body.total
            stock = queries.stock_levels(
                scratch, _touched_skus(scratch, body), store=store_moved_by(ev, body)
            )
            result.steps.append(ReplayStep(ev, flags, sales, gross, stock))
            result.events += 1
            if progress is not None:
                progress(1)
        result.state = queries.state_snapshot(scratch)
        result.stock = _final_stock(scratch, store)
        return result
    finally:
        scratch.close()


def _body_or_none(ev: Event) -> Body | None:
    try:
        return decode_body(ev)
    except TillmeshError:
        return None


def _final_stock(scratch: sqlite3.Connection, store: str | None) -> dict[str, dict[str, int]]:
    if store is None:
        return queries.stock_by_store(scratch)
    return {store: queries.stock_levels(scratch, store=store)}


def _touched_skus(conn: sqlite3.Connection, body: Body | None) -> list[str]:
    if isinstance(body, SaleCompleted):
        return sorted({line.sku for line in body.lines})
    if isinstance(body, SaleVoided):  # a void restocks every line of the sale
        return lookups.sale_skus(conn, body.sale)
    if isinstance(body, RefundIssued):
        return _refunded_skus(conn, body)
    if isinstance(body, StockReceived | StockAdjusted | StockCounted):
        return [body.sku]
    return []


def _refunded_skus(conn: sqlite3.Connection, body: RefundIssued) -> list[str]:
    """The SKUs of the sale lines the refund names: only those come back (with restock)."""
    if not body.restock:
        return []
    return lookups.sale_skus(conn, body.sale, sorted({line.line for line in body.lines}))
