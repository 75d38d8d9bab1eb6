"""Replay (`tillmesh log replay`): the state of the in-scope events up to a cut, and the
last of those events folded one by one as a stream of steps.

The fold starts from the newest checkpoint before the first step (`ops.checkpoints`,
rolled back afterwards) or else from nothing (or the compaction snapshot) in a scratch
database (`ops.new_scratch`), so the replica's own state is never touched and the cost
follows what lies past that checkpoint. Events before the steps are folded in batches;
each step records running sales totals and the stock of the SKUs the event touched.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conflict import lookups, queries
from conflict.policies import state_fold
from conflict.state import StoreState
from conflict.stock import stock_store, store_moved_by
from core import hlc_order, segments
from core.compact import CHUNK as BATCH
from core.compact import fold_rows
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
from core.fold import FLAG_REVOKED, Accepted
from replicas.errors import SelectsNothing
from replicas.ops.checkpoints import Checkpoint, open_checkpoint, rows_after, usable_checkpoint
from replicas.ops.common import Cut, Progress, Scope, new_scratch, replica_of

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
    events: int = 0  # events the state holds: the checkpoint's and those folded past it
    folded: int = 0  # events folded past the starting point
    checkpoint: Checkpoint | None = None
    steps: list[ReplayStep] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    # On hand as of the cut, per store shown: the replayed store only, or every store
    # (HQ, no --store). Never summed over stores: that is no store's stock.
    stock: dict[str, dict[str, int]] = field(default_factory=dict)


def event_cut(conn: sqlite3.Connection, origin: str, seq: int) -> Cut:
    hlc = segments.hlc_at(conn, origin, seq)
    if hlc is None:
        raise SelectsNothing("replay", f"no event {origin}:{seq} in this log")
    return hlc, origin, seq


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
    *,
    log_path: Path | None = None,
    since: int | None = None,
    last: int | None = None,
) -> Replay:
    """Fold the in-scope events up to `cut`; the steps are those at or after `since`
    (an HLC), only the `last` of them if given. With `log_path`, start from its newest
    usable checkpoint before the first step.

    The final stock is `store`'s, or every store's apart if None (`replayed_store`).
    """
    fold = state_fold(conn)
    first = _first_step(conn, cut, scope, since, last)
    ck = None
    if log_path is not None and first is not None:
        ck = usable_checkpoint(conn, log_path, first, scope)
    scratch = open_checkpoint(ck) if ck else new_scratch(conn, fold, scope, cut)
    try:
        result = Replay(cut, events=ck.events if ck else 0, checkpoint=ck)
        _fold_up_to(conn, scratch, fold, result, scope, first, progress)
        result.state = queries.state_snapshot(scratch)
        result.stock = _final_stock(scratch, store)
        return result
    finally:
        if ck is not None:
            scratch.execute("ROLLBACK")  # the checkpoint stays as it was
        scratch.close()


def _fold_up_to(
    conn: sqlite3.Connection,
    scratch: sqlite3.Connection,
    fold: StoreState,
    result: Replay,
    scope: Scope,
    first: Cut | None,
    progress: Progress | None,
) -> None:
    """Events past the starting point: in batches before `first`, one by one after."""
    vv = result.checkpoint.vv if result.checkpoint else {}
    batch: list[tuple[bytes, int]] = []
    sales = gross = -1
    for raw, flags, hlc, origin, seq, _ in rows_after(conn, vv, result.cut, scope):
        result.folded += 1
        result.events += 1
        if first is not None and (hlc, origin, seq) < first:
            batch.append((raw, flags))
            if len(batch) >= BATCH:
                fold_rows(scratch, fold, batch, progress)
                batch = []
            continue
        if sales < 0:
            fold_rows(scratch, fold, batch, progress)
            batch = []
            summary = queries.sales_summary(scratch)
            sales, gross = summary.sales, summary.gross
        ev = decode_event(raw)
        # Written after HQ revoked its origin: a step, never state (as in `fold_rows`).
        body = None if flags & FLAG_REVOKED else _body_or_none(ev)
        if body is not None:
            fold.apply(scratch, [Accepted(ev, body, flags)])
            if isinstance(body, SaleCompleted):
                sales, gross = sales + 1, gross + body.total
        stock = queries.stock_levels(
            scratch, _touched_skus(scratch, body), store=store_moved_by(ev, body)
        )
        result.steps.append(ReplayStep(ev, flags, sales, gross, stock))
        if progress is not None:
            progress(1)
    fold_rows(scratch, fold, batch, progress)


def _first_step(
    conn: sqlite3.Connection, cut: Cut | None, scope: Scope, since: int | None, last: int | None
) -> Cut | None:
    """The (hlc, origin, seq) of the first step: the later of `since` and the `last`-th
    in-scope event back from the cut. None: every event is a step. Past the cut if
    there is no step at all."""
    first: Cut | None = None if since is None else (since, "", 0)
    if last is not None:
        back = _nth_back(conn, cut, scope, last)
        if back is None:
            back = (1 << 62, "", 0)  # `last` is 0: no steps
        first = back if first is None else max(first, back)
    return first


def _nth_back(conn: sqlite3.Connection, cut: Cut | None, scope: Scope, n: int) -> Cut | None:
    if n <= 0:
        return None
    # fewer than n: every event is a step
    return hlc_order.nth_back(conn, n, cut, scope) or (0, "", 0)


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
