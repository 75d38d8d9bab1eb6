"""Sales endpoints of the till API: sell, look up, void, refund, find by receipt.

A sale prices the lines without `unit_price` from the local catalog (409 if it
cannot) and takes the next generated receipt unless given one; a given receipt must be
unused here, a given shift not closed here, both checked under the till's lock. Voids
and refunds check the local state under the lock, and only in the sale's own store.
"""

from __future__ import annotations

import re
import sqlite3
from contextlib import AbstractAsyncContextManager, nullcontext

import msgspec
from fastapi import APIRouter, HTTPException

from tillmesh.conflict import queries
from tillmesh.conflict.stock import stock_store
from tillmesh.core.events import HQ, SaleVoided, encode_body
from tillmesh.replicas import api_models as m
from tillmesh.replicas.api_common import Record, Till, event_out, hlc_iso, not_found

__all__ = ["sales_router"]


def _catalog_of(conn: sqlite3.Connection, skus: list[str]) -> dict[str, Record]:
    return {sku: p for sku in skus if (p := queries.product(conn, sku)) is not None}


def _default_prices(req: m.SaleIn, products: dict[str, Record]) -> dict[str, int]:
    """Catalog prices for the lines without `unit_price`; 409 if a SKU cannot be priced."""
    skus = sorted({ln.sku for ln in req.lines if ln.unit_price is None})
    unknown = [s for s in skus if s not in products]
    if unknown:
        detail = f"unknown SKU {', '.join(unknown)}: not in the catalog; give unit_price to sell it"
        raise HTTPException(409, detail)
    inactive = [s for s in skus if not products[s]["active"]]
    if inactive:
        raise HTTPException(409, f"SKU {', '.join(inactive)} is inactive in the catalog")
    return {s: int(products[s]["price"]) for s in skus}


# The form of every generated receipt (Till.take_receipt): "<store>-<till>-<counter>",
# names of [A-Za-z0-9_-] and a counter of 6 digits or more; "hq-<counter>" from builds
# that let HQ sell.
_GENERATED = re.compile(r"(hq|[A-Za-z0-9_-]+-[A-Za-z0-9_-]+)-[0-9]{6,}")


def _check_receipt_form(till: Till, receipt: str) -> None:
    """A client receipt never takes a generated one's form: this till's own, or another
    till's, which that till may generate next (a receipt collision, made here)."""
    if receipt.startswith(till.prefix):
        raise HTTPException(
            422, f"receipts starting {till.prefix!r} are reserved for generated ones"
        )
    if _GENERATED.fullmatch(receipt):
        raise HTTPException(
            422,
            f"receipt {receipt!r} has the form of a till's generated receipts"
            " (<store>-<till>-<6+ digits>), which that till may issue too: leave receipt out"
            " to get this till's next one, or use another form (e.g. PAPER-17)",
        )


def _sale_lock(till: Till, req: m.SaleIn) -> AbstractAsyncContextManager[object]:
    """The till's lock for a sale checked against the local state (a client receipt, a
    shift): the check and the append are then one step against other writes, so retries
    in flight at once take a receipt once and a sale racing its shift's close is either
    in the count or refused. Other sales need no check, nor the lock."""
    return till.lock if req.receipt is not None or req.shift else nullcontext()


def _shift_closed(conn: sqlite3.Connection, shift: str) -> bool:
    row = conn.execute("SELECT 1 FROM st_shift_close WHERE shift = ?", (shift,)).fetchone()
    return row is not None


async def _check_sale_state(till: Till, req: m.SaleIn) -> None:
    """Under `_sale_lock`: refuse a receipt some sale here already has, and a shift closed
    here (its cash was counted). A shift unknown here is fine: it may have been opened on
    another till whose events have not arrived, and a till keeps selling offline."""
    receipt, shift = req.receipt, req.shift
    if receipt is None and not shift:
        return
    used, closed = await till.read(
        lambda c: (
            receipt is not None and bool(queries.sale_by_receipt(c, receipt)),
            bool(shift) and _shift_closed(c, shift),
        )
    )
    if used:
        raise HTTPException(409, f"receipt {receipt!r} is already used")
    if closed:
        raise HTTPException(409, f"shift {shift!r} is closed; open a new shift to sell in")


def _sale_view(sale: Record | None, sale_id: str) -> m.SaleView:
    if sale is None:
        raise not_found(f"sale {sale_id!r}")
    return m.SaleView.model_validate(sale)


def _check_own_store(till: Till, sale_id: str, origin: str) -> None:
    """Voids and refunds are made in the sale's store: its tills would never hold HQ's
    (a refund there of an unknown sale, forever), and HQ's restock is HQ's stock."""
    store, own = stock_store(origin), stock_store(till.replica.replica_id)
    if store != own:
        detail = f"sale {sale_id} was made in store {store!r}: void or refund it on a till there"
        raise HTTPException(409, detail)
    _check_till(till)  # HQ's own sale, from a build that let HQ sell


def _check_till(till: Till) -> None:
    """HQ is a read replica of the stores: a sale there would be store "hq"'s, in no
    store's books or drawer. Selling (and so voiding, refunding) is done on a till."""
    if till.replica.replica_id == HQ:
        raise HTTPException(
            409, "HQ does not sell: make sales, voids and refunds on a till of the store"
        )


def _has_refunds(conn: sqlite3.Connection, sale_id: str) -> bool:
    """Any refund of the sale here, whatever its amount (0 is allowed) or restock."""
    row = conn.execute("SELECT 1 FROM st_refunds WHERE sale_id = ? LIMIT 1", (sale_id,))
    return row.fetchone() is not None


def _check_voidable(sale: m.SaleView, refunded: bool) -> None:
    """A void restocks every line and cancels the whole total: after a refund, what the
    refund gave back would come back twice (the reverse is refused by refunds)."""
    if sale.voided:
        raise HTTPException(409, f"sale {sale.id} is already voided")
    if refunded:
        raise HTTPException(
            409,
            f"sale {sale.id} has refunds: a void would give them back twice;"
            " refund the remaining lines instead",
        )


Refunded = dict[int, tuple[int, int]]  # sale line -> (qty, amount) refunded so far


def _refunded(conn: sqlite3.Connection, sale_id: str) -> Refunded:
    """Per sale line, the qty and amount refunded so far (queries has no per-line figure)."""
    rows = conn.execute(
        "SELECT rl.line, SUM(rl.qty), SUM(rl.amount) FROM st_refund_lines rl"
        " JOIN st_refunds r ON r.eid = rl.refund_id WHERE r.sale_id = ? GROUP BY rl.line",
        (sale_id,),
    )
    return {int(line): (int(qty), int(amount)) for line, qty, amount in rows}


def _refund_amounts(sale: Record, done: Refunded, req: m.RefundIn) -> list[int]:
    """Amount per refund line; refuses lines the sale lacks, and qty or money beyond what
    each line sold (a line's earlier refunds, here and in this request, count)."""
    lines, so_far = sale["lines"], dict(done)
    amounts = []
    for rl in req.lines:
        if rl.line >= len(lines):
            raise HTTPException(422, f"sale {sale['id']} has no line {rl.line}")
        amounts.append(_refund_line(lines[rl.line], rl, so_far))
    if sum(amounts) + sale["refunded"] > sale["total"]:
        raise HTTPException(409, f"refund would exceed the sale total {sale['total']}")
    return amounts


def _refund_line(ln: Record, rl: m.RefundLineIn, so_far: Refunded) -> int:
    """One refund line's amount, added to `so_far`; 409 past the line's qty or value."""
    qty_done, amount_done = so_far.get(rl.line, (0, 0))
    if qty_done + rl.qty > ln["qty"]:
        raise HTTPException(409, f"line {rl.line}: only {ln['qty'] - qty_done} left to refund")
    # Pro rata, rounded down: refunding a whole line gives exactly its total.
    line_total = ln["qty"] * ln["unit_price"] - ln["discount"]
    amount = rl.amount if rl.amount is not None else line_total * rl.qty // ln["qty"]
    left = max(line_total - amount_done, 0)
    if amount > left:
        raise HTTPException(
            409,
            f"line {rl.line}: refund {amount} would exceed the line's value {line_total}"
            f" ({amount_done} refunded already); refund at most {left}",
        )
    so_far[rl.line] = (qty_done + rl.qty, amount_done + amount)
    return amount


def sales_router(till: Till) -> APIRouter:
    r = APIRouter(tags=["sales"])

    @r.post("/sales", status_code=201)
    async def create_sale(req: m.SaleIn) -> m.SaleOut:
        _check_till(till)
        skus = sorted({ln.sku for ln in req.lines if ln.unit_price is None})
        # A read is a hop to the reader thread (~0.5 ms here): only when a line needs it.
        products = await till.read(lambda c: _catalog_of(c, skus)) if skus else {}
        prices = _default_prices(req, products)
        if req.receipt is not None:
            _check_receipt_form(till, req.receipt)
        await till.load_counter()
        body = req.to_body(prices, req.receipt or "unassigned", till.replica.online())
        encode_body(body)  # refuse a bad sale before it takes a number: no receipt gaps
        async with _sale_lock(till, req):
            await _check_sale_state(till, req)
            if req.receipt is None:
                body = msgspec.structs.replace(body, receipt=till.take_receipt())
            ev = await till.append(body)  # returns once durable: only then do we answer
        return m.SaleOut(
            sale_id=ev.id, receipt=body.receipt, total=body.total, change=body.change,
            hlc=ev.hlc, at=hlc_iso(ev.hlc),
        )  # fmt: skip

    @r.get("/sales/{sale_id:path}")
    async def get_sale(sale_id: str) -> m.SaleView:
        return _sale_view(await till.read(lambda c: queries.sale(c, sale_id)), sale_id)

    @r.post("/sales/{sale_id:path}/void", status_code=201)
    async def void_sale(sale_id: str, req: m.VoidIn | None = None) -> m.EventOut:
        async with till.lock:
            found, refunded = await till.read(
                lambda c: (queries.sale(c, sale_id), _has_refunds(c, sale_id))
            )
            sale = _sale_view(found, sale_id)
            _check_own_store(till, sale_id, sale.origin)
            _check_voidable(sale, refunded)
            ev = await till.append(SaleVoided(sale=sale_id, reason=req.reason if req else ""))
        return event_out(ev)

    @r.post("/sales/{sale_id:path}/refunds", status_code=201)
    async def refund_sale(sale_id: str, req: m.RefundIn) -> m.RefundOut:
        async with till.lock:
            sale, done = await till.read(
                lambda c: (queries.sale(c, sale_id), _refunded(c, sale_id))
            )
            if sale is None:
                raise not_found(f"sale {sale_id!r}")
            _check_own_store(till, sale_id, sale["origin"])
            if sale["voided"]:
                raise HTTPException(409, f"sale {sale_id} is voided")
            amounts = _refund_amounts(sale, done, req)
            method = req.method or sale["payments"][0]["method"]
            body = req.to_body(sale_id, amounts, method)
            ev = await till.append(body)
        return m.RefundOut(
            refund_id=ev.id, sale_id=sale_id, amount=body.amount, hlc=ev.hlc, at=hlc_iso(ev.hlc)
        )

    @r.get("/receipts/{receipt:path}")
    async def get_receipt(receipt: str) -> m.ReceiptView:
        sales = await till.read(lambda c: queries.sale_by_receipt(c, receipt))
        if not sales:
            raise not_found(f"receipt {receipt!r}")
        return m.ReceiptView(receipt=receipt, sales=[m.SaleView.model_validate(s) for s in sales])

    return r
