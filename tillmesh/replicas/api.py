"""The till's local HTTP API and the till page it serves.

The cashier talks to this process only, never to the network: every write becomes
one event appended to the replica's own log, and the response is sent only after
`log.append` returned, i.e. once the event (and the state it folds into) is durable.
Reads are queries on a read snapshot of the local state. Replication happens beside
this, in the sync engine; the API only reports on it through `ReplicaHandle`.

Errors: pydantic 422s (with the offending input stripped, so a mistyped card number
is never echoed or logged), the event layer's `ValidationError` as 422, 404 for an
unknown sale/SKU/shift, 409 when the request contradicts the local state (unknown SKU
without a price, double void, over-refund), 403 for catalog writes a till may not
make, 503 when the log is unusable. Clients never see a stack trace.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from tillmesh.conflict import queries
from tillmesh.conflict.stock import stock_store
from tillmesh.core.clock import hlc_ms
from tillmesh.core.errors import StorageError, TillmeshError, ValidationError
from tillmesh.core.events import HQ, Body, Event, SaleVoided, encode_body
from tillmesh.core.log import EventLog
from tillmesh.replicas import api_models as m
from tillmesh.replicas.api_conflicts import conflicts_router, count_open

__all__ = ["STATIC_DIR", "ReplicaHandle", "create_app"]

STATIC_DIR = Path(__file__).parent / "static"
T = TypeVar("T")
Record = dict[str, Any]
Sku = Annotated[str, PathParam(min_length=1, max_length=64, pattern=m.SKU_PATTERN)]
_log = logging.getLogger(__name__)


class ReplicaHandle(Protocol):
    """What the API needs of a running replica (the log plus what sync knows)."""

    replica_id: str
    log: EventLog

    def sync_status(self) -> dict[str, object]:
        """JSON-able sync state (version vector, peers, lag, incidents, receipts); may be {}."""
        ...

    def online(self) -> bool: ...

    def unsynced_to_hq(self) -> int:
        """How many of this replica's own sales HQ does not yet hold durably."""
        ...


class _Till:
    """Per-app state: the handle, the receipt counter and the check-then-append lock."""

    def __init__(self, replica: ReplicaHandle) -> None:
        self.replica = replica
        # Receipts: "<store>-<till>-<n>". The prefix is reserved for generated ones.
        self.prefix = replica.replica_id.replace("/", "-") + "-"
        self._counter: int | None = None
        # Voids, refunds and shift changes check local state before appending; the lock
        # keeps two such requests from passing the same check. Sales never take it.
        self.lock = asyncio.Lock()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.replica.log.read(fn)

    async def append(self, body: Body) -> Event:
        return await self.replica.log.append(body)

    async def load_counter(self) -> None:
        if self._counter is None:
            rid, prefix = self.replica.replica_id, self.prefix
            last = await self.read(lambda c: _last_receipt_no(c, rid, prefix))
            # Concurrent first sales all load; the first to finish wins, or a later
            # (stale) read would rewind a counter others have already taken from.
            if self._counter is None:
                self._counter = last

    def take_receipt(self) -> str:
        """Next generated receipt. Call right before `append` with no await in between:
        then counters reach the log in the order they were taken, so the newest own sale
        always holds the highest counter and `load_counter` resumes after it on restart."""
        assert self._counter is not None
        self._counter += 1
        return f"{self.prefix}{self._counter:06d}"


def _last_receipt_no(conn: sqlite3.Connection, origin: str, prefix: str) -> int:
    row = conn.execute(
        "SELECT receipt FROM st_sales WHERE origin = ? AND substr(receipt, 1, ?) = ?"
        " ORDER BY seq DESC LIMIT 1",
        (origin, len(prefix), prefix),
    ).fetchone()
    tail = row[0][len(prefix) :] if row else ""
    return int(tail) if tail.isdigit() else 0


def _at(hlc: int) -> str:
    return datetime.fromtimestamp(hlc_ms(hlc) / 1000, UTC).isoformat(timespec="milliseconds")


def _event_out(ev: Event) -> m.EventOut:
    return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=_at(ev.hlc))


def _not_found(what: str) -> HTTPException:
    return HTTPException(404, f"{what} not found")


# --- errors ----------------------------------------------------------------------------


def _install_errors(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_error)
    app.add_exception_handler(ValidationError, _event_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(TillmeshError, _internal_error)
    app.add_exception_handler(Exception, _internal_error)


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # pydantic's errors carry the offending `input`: dropped, so a card number typed
    # into the wrong field is never sent back (or into a proxy's logs).
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


async def _event_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    _log.error("event log unavailable on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "the till's event log is unavailable"}, status_code=503)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    _log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


# --- sales -----------------------------------------------------------------------------


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


async def _check_receipt(till: _Till, receipt: str) -> None:
    if receipt.startswith(till.prefix):
        raise HTTPException(
            422, f"receipts starting {till.prefix!r} are reserved for generated ones"
        )
    if await till.read(lambda c: queries.sale_by_receipt(c, receipt)):
        raise HTTPException(409, f"receipt {receipt!r} is already used")


def _sale_view(sale: Record | None, sale_id: str) -> m.SaleView:
    if sale is None:
        raise _not_found(f"sale {sale_id!r}")
    return m.SaleView.model_validate(sale)


def _check_own_store(till: _Till, sale_id: str, origin: str) -> None:
    """Voids and refunds are made in the sale's store: its tills would never hold HQ's
    (a refund there of an unknown sale, forever), and HQ's restock is HQ's stock."""
    store, own = stock_store(origin), stock_store(till.replica.replica_id)
    if store != own:
        detail = f"sale {sale_id} was made in store {store!r}: void or refund it on a till there"
        raise HTTPException(409, detail)


def _refunded_qty(conn: sqlite3.Connection, sale_id: str) -> dict[int, int]:
    """Per sale line, the qty refunded so far (queries has no per-line figure)."""
    rows = conn.execute(
        "SELECT rl.line, SUM(rl.qty) FROM st_refund_lines rl"
        " JOIN st_refunds r ON r.eid = rl.refund_id WHERE r.sale_id = ? GROUP BY rl.line",
        (sale_id,),
    )
    return {int(line): int(qty) for line, qty in rows}


def _refund_amounts(sale: Record, done: dict[int, int], req: m.RefundIn) -> list[int]:
    """Amount per refund line; refuses lines the sale lacks and qty beyond what was sold."""
    lines, wanted, amounts = sale["lines"], dict(done), []
    for rl in req.lines:
        if rl.line >= len(lines):
            raise HTTPException(422, f"sale {sale['id']} has no line {rl.line}")
        ln = lines[rl.line]
        wanted[rl.line] = wanted.get(rl.line, 0) + rl.qty
        if wanted[rl.line] > ln["qty"]:
            left = ln["qty"] - done.get(rl.line, 0)
            raise HTTPException(409, f"line {rl.line}: only {left} left to refund")
        # Pro rata, rounded down: refunding a whole line gives exactly its total.
        line_total = ln["qty"] * ln["unit_price"] - ln["discount"]
        amounts.append(rl.amount if rl.amount is not None else line_total * rl.qty // ln["qty"])
    if sum(amounts) + sale["refunded"] > sale["total"]:
        raise HTTPException(409, f"refund would exceed the sale total {sale['total']}")
    return amounts


def _sales_router(till: _Till) -> APIRouter:
    r = APIRouter(tags=["sales"])

    @r.post("/sales", status_code=201)
    async def create_sale(req: m.SaleIn) -> m.SaleOut:
        skus = sorted({ln.sku for ln in req.lines if ln.unit_price is None})
        # A read is a hop to the reader thread (~0.5 ms here): only when a line needs it.
        products = await till.read(lambda c: _catalog_of(c, skus)) if skus else {}
        prices = _default_prices(req, products)
        if req.receipt is not None:
            await _check_receipt(till, req.receipt)
        await till.load_counter()
        body = req.to_body(prices, req.receipt or "unassigned", till.replica.online())
        encode_body(body)  # refuse a bad sale before it takes a number: no receipt gaps
        if req.receipt is None:
            body = msgspec.structs.replace(body, receipt=till.take_receipt())
        ev = await till.append(body)  # returns once durable: only then do we answer
        receipt = body.receipt
        return m.SaleOut(
            sale_id=ev.id, receipt=receipt, total=body.total, change=body.change,
            hlc=ev.hlc, at=_at(ev.hlc),
        )  # fmt: skip

    @r.get("/sales/{sale_id:path}")
    async def get_sale(sale_id: str) -> m.SaleView:
        return _sale_view(await till.read(lambda c: queries.sale(c, sale_id)), sale_id)

    @r.post("/sales/{sale_id:path}/void", status_code=201)
    async def void_sale(sale_id: str, req: m.VoidIn | None = None) -> m.EventOut:
        async with till.lock:
            sale = _sale_view(await till.read(lambda c: queries.sale(c, sale_id)), sale_id)
            _check_own_store(till, sale_id, sale.origin)
            if sale.voided:
                raise HTTPException(409, f"sale {sale_id} is already voided")
            ev = await till.append(SaleVoided(sale=sale_id, reason=req.reason if req else ""))
        return _event_out(ev)

    @r.post("/sales/{sale_id:path}/refunds", status_code=201)
    async def refund_sale(sale_id: str, req: m.RefundIn) -> m.RefundOut:
        async with till.lock:
            sale, done = await till.read(
                lambda c: (queries.sale(c, sale_id), _refunded_qty(c, sale_id))
            )
            if sale is None:
                raise _not_found(f"sale {sale_id!r}")
            _check_own_store(till, sale_id, sale["origin"])
            if sale["voided"]:
                raise HTTPException(409, f"sale {sale_id} is voided")
            amounts = _refund_amounts(sale, done, req)
            method = req.method or sale["payments"][0]["method"]
            body = req.to_body(sale_id, amounts, method)
            ev = await till.append(body)
        return m.RefundOut(
            refund_id=ev.id, sale_id=sale_id, amount=body.amount, hlc=ev.hlc, at=_at(ev.hlc)
        )

    @r.get("/receipts/{receipt:path}")
    async def get_receipt(receipt: str) -> m.ReceiptView:
        sales = await till.read(lambda c: queries.sale_by_receipt(c, receipt))
        if not sales:
            raise _not_found(f"receipt {receipt!r}")
        return m.ReceiptView(receipt=receipt, sales=[m.SaleView.model_validate(s) for s in sales])

    return r


# --- stock -----------------------------------------------------------------------------

# Stock is kept per store: a replica's stock events move its own store's stock (HQ's
# its own, store "hq"), and that is what these endpoints show unless ?store= names
# another store whose events the replica holds (HQ: any store; a till: its own and hq).
StoreParam = Annotated[
    str | None,
    Query(max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="default: this replica's"),
]


def _on_hand(conn: sqlite3.Connection, sku: str, store: str) -> int | None:
    """On hand; 0 for a catalog SKU never moved; None for a SKU nothing knows."""
    levels = queries.stock_levels(conn, store=store)
    if sku in levels:
        return levels[sku]
    return 0 if queries.product(conn, sku) is not None else None


def _stock_router(till: _Till) -> APIRouter:
    r = APIRouter(tags=["stock"])
    own = stock_store(till.replica.replica_id)

    async def move(sku: str, body: Body) -> m.StockOut:
        # Stock may arrive before its product replicates here: no catalog check.
        ev = await till.append(body)
        on_hand = await till.read(lambda c: queries.stock_levels(c, [sku], store=own)[sku])
        return m.StockOut(sku=sku, on_hand=on_hand, event_id=ev.id, hlc=ev.hlc)

    @r.post("/stock/{sku}/receive", status_code=201)
    async def receive(sku: Sku, req: m.StockReceiveIn) -> m.StockOut:
        return await move(sku, req.to_body(sku))

    @r.post("/stock/{sku}/adjust", status_code=201)
    async def adjust(sku: Sku, req: m.StockAdjustIn) -> m.StockOut:
        return await move(sku, req.to_body(sku))

    @r.post("/stock/{sku}/count", status_code=201)
    async def count(sku: Sku, req: m.StockCountIn) -> m.StockOut:
        return await move(sku, req.to_body(sku))

    @r.get("/stock")
    async def all_stock(store: StoreParam = None) -> list[m.StockLevel]:
        levels = await till.read(lambda c: queries.stock_levels(c, store=store or own))
        return [m.StockLevel(sku=s, on_hand=n) for s, n in levels.items()]

    @r.get("/stock/{sku}")
    async def one_stock(sku: Sku, store: StoreParam = None) -> m.StockLevel:
        on_hand = await till.read(lambda c: _on_hand(c, sku, store or own))
        if on_hand is None:
            raise _not_found(f"SKU {sku!r}")
        return m.StockLevel(sku=sku, on_hand=on_hand)

    return r


# --- catalog ---------------------------------------------------------------------------


def _catalog_router(till: _Till) -> APIRouter:
    r = APIRouter(tags=["catalog"])

    async def write(sku: str, body: Body) -> m.CatalogOut:
        ev = await till.append(body)
        product = await till.read(lambda c: queries.product(c, sku))
        view = m.ProductView.model_validate(product) if product else None
        return m.CatalogOut(event_id=ev.id, hlc=ev.hlc, at=_at(ev.hlc), product=view)

    @r.get("/catalog")
    async def list_catalog() -> list[m.ProductView]:
        return [m.ProductView.model_validate(p) for p in await till.read(queries.catalog)]

    @r.get("/catalog/{sku}")
    async def get_product(sku: Sku) -> m.ProductView:
        product = await till.read(lambda c: queries.product(c, sku))
        if product is None:
            raise _not_found(f"SKU {sku!r}")
        return m.ProductView.model_validate(product)

    @r.put("/catalog/{sku}")
    async def upsert_product(sku: Sku, req: m.ProductIn) -> m.CatalogOut:
        # Products are HQ's to define; a till only sells what replicated to it.
        if till.replica.replica_id != HQ:
            raise HTTPException(403, "products are defined at HQ; a till may only set prices")
        return await write(sku, req.to_body(sku))

    @r.put("/catalog/{sku}/price")
    async def set_price(sku: Sku, req: m.PriceIn) -> m.CatalogOut:
        # Tills may set prices too (a store manager's change); the price policy of
        # StoreState decides between concurrent ones, identically on every replica.
        if await till.read(lambda c: queries.product(c, sku)) is None:
            raise _not_found(f"SKU {sku!r}")
        return await write(sku, req.to_body(sku))

    return r


# --- shifts ----------------------------------------------------------------------------


def _shift_router(till: _Till) -> APIRouter:
    r = APIRouter(tags=["shifts"])

    async def totals(shift: str) -> Record:
        return await till.read(lambda c: queries.shift_totals(c, shift))

    @r.post("/shifts", status_code=201)
    async def open_shift(req: m.ShiftOpenIn) -> m.ShiftView:
        shift = req.shift or f"{till.prefix}shift-{secrets.token_hex(4)}"
        async with till.lock:
            if (await totals(shift))["opened_by"] is not None:
                raise HTTPException(409, f"shift {shift!r} is already open")
            await till.append(req.to_body(shift))
            return m.ShiftView.model_validate(await totals(shift))

    @r.post("/shifts/{shift}/close")
    async def close_shift(shift: str, req: m.ShiftCloseIn) -> m.ShiftView:
        async with till.lock:
            state = await totals(shift)
            if state["opened_by"] is None:
                raise _not_found(f"shift {shift!r}")
            if state["closed_by"] is not None:
                raise HTTPException(409, f"shift {shift!r} is already closed")
            await till.append(req.to_body(shift))
            return m.ShiftView.model_validate(await totals(shift))

    @r.get("/shifts/{shift}")
    async def get_shift(shift: str) -> m.ShiftView:
        state = await totals(shift)
        if state["opened_by"] is None and state["closed_by"] is None:
            raise _not_found(f"shift {shift!r}")
        return m.ShiftView.model_validate(state)

    return r


# --- status and page -------------------------------------------------------------------


def _status_router(till: _Till) -> APIRouter:
    r = APIRouter(tags=["status"])
    replica = till.replica

    @r.get("/status")
    async def status(digest: bool = True, conflicts: bool = True) -> m.StatusOut:
        # The page polls with ?digest=false&conflicts=false: hashing all state and running
        # conflict detection every 2 s is wasted work.
        stats = await replica.log.stats()
        summary, dig, open_conflicts = await till.read(
            lambda c: (
                queries.sales_summary(c),
                queries.state_digest(c) if digest else None,
                count_open(c) if conflicts else None,
            )
        )
        return m.StatusOut(
            replica_id=replica.replica_id, online=replica.online(),
            version_vector=replica.log.version_vector(), events=stats.events,
            pending=stats.pending, quarantined=stats.quarantined,
            unsynced_to_hq=replica.unsynced_to_hq(), sales=m.SalesSummaryView(**summary._asdict()),
            sync=replica.sync_status(), digest=dig, open_conflicts=open_conflicts,
        )  # fmt: skip

    @r.get("/state/digest")
    async def digest() -> m.DigestOut:
        return m.DigestOut(digest=await till.read(queries.state_digest))

    @r.get("/healthz")
    async def healthz() -> m.HealthOut:
        await till.read(lambda c: c.execute("SELECT 1").fetchone())  # the log answers reads
        return m.HealthOut(ok=True, replica_id=replica.replica_id)

    return r


def _mount_page(app: FastAPI) -> None:
    # Served by the till itself, no CDN: the page must work with the network cut.
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def create_app(replica: ReplicaHandle) -> FastAPI:
    """The till's HTTP API over a running replica; OpenAPI at /openapi.json, docs at /docs."""
    till = _Till(replica)
    # FastAPIOffline: /docs and /redoc from assets installed with tillmesh, not a CDN (a
    # till whose internet is down is when integrators most need them).
    app = FastAPIOffline(
        title=f"tillmesh till {replica.replica_id}",
        description="Local till API: every write is an event in this replica's durable log.",
        version="1",
    )
    _install_errors(app)
    for router in (_sales_router, _stock_router, _catalog_router, _shift_router, _status_router):
        app.include_router(router(till))
    app.include_router(conflicts_router(replica.log))
    _mount_page(app)
    return app
