"""The read model's rows of accepted events: one function of each event, per fact table.

Every row is keyed by its event's id (or the id and a line index), so a fact table is a
function of the set of events folded, never of their order; what depends on several
events is a view (`schema.py`), or `hq_products`, recomputed here with the same policy
code as the SQLite fold (`conflict.catalog.effective`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from conflict import cards, effects
from conflict.catalog import PricePolicy, Write, effective, store_prices
from conflict.stock import stock_store
from core.events import (
    Body,
    CardCaptured,
    CardDeclined,
    CardExpired,
    CardLimitsSet,
    ConflictResolved,
    Event,
    Payment,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    SaleCompleted,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
)

__all__ = ["FACT_COLUMNS", "FACT_TYPES", "REVOCABLE", "Facts", "products_of"]

Row = tuple[object, ...]
_json = msgspec.json.Encoder().encode  # SaleLine structs as objects, 0s left out
# jsonb's binary wire format: version 1, then the JSON text. Sent as ready bytes (COPY
# typed `bytea` for these columns below): psycopg's Jsonb adapter costs ~5 us per sale
# of Python, the server's jsonb_recv parses the text either way.
_JSONB_V1 = b"\x01"

# table -> its columns, in the order the rows below hold them (COPY names them).
FACT_COLUMNS: dict[str, tuple[str, ...]] = {
    "hq_sales": ("id", "store", "origin", "seq", "hlc", "receipt", "total", "change", "shift",
                 "cashier", "lines", "payments", "tax_mode"),
    "hq_voids": ("eid", "sale_id", "hlc", "origin", "seq", "reason"),
    "hq_refunds": ("eid", "sale_id", "hlc", "origin", "seq", "amount", "method", "restock",
                   "reason"),
    "hq_refund_lines": ("refund_id", "idx", "line", "qty", "amount", "tax"),
    "hq_stock_moves": ("eid", "store", "sku", "hlc", "origin", "seq", "kind", "delta"),
    "hq_stock_counts": ("eid", "store", "sku", "hlc", "origin", "seq", "count"),
    "hq_catalog_writes": ("eid", "sku", "hlc", "origin", "seq", "kind", "name", "price",
                          "tax_rate_bp", "active"),
    "hq_shift_events": ("eid", "shift", "kind", "hlc", "origin", "seq", "amount", "cashier"),
    "hq_resolutions": ("eid", "conflict", "action", "by_", "reason", "price", "hlc", "origin",
                       "seq"),
    "hq_card_limits": ("eid", "store", "hlc", "origin", "seq", "per_payment", "till_total",
                       "till_count", "max_age_s"),
    "hq_card_outcomes": ("eid", "payment", "kind", "hlc", "origin", "seq", "detail"),
    "hq_resolution_effects": ("eid", "idx", "kind", "store", "sku", "n", "origin", "seq"),
    "hq_superseded": ("eid", "by_eid", "by_origin", "by_seq"),
}  # fmt: skip

# Their PostgreSQL types, for binary COPY (values are dumped in C, not adapted in Python).
FACT_TYPES: dict[str, tuple[str, ...]] = {
    "hq_sales": ("text", "text", "text", "int8", "int8", "text", "int8", "int8", "text", "text",
                 "bytea", "bytea", "text"),  # lines, payments: jsonb's binary format, made here
    "hq_voids": ("text", "text", "int8", "text", "int8", "text"),
    "hq_refunds": ("text", "text", "int8", "text", "int8", "int8", "text", "bool", "text"),
    "hq_refund_lines": ("text", "int4", "int4", "int8", "int8", "int8"),
    "hq_stock_moves": ("text", "text", "text", "int8", "text", "int8", "text", "int8"),
    "hq_stock_counts": ("text", "text", "text", "int8", "text", "int8", "int8"),
    "hq_catalog_writes": ("text", "text", "int8", "text", "int8", "text", "text", "int8",
                          "int4", "bool"),
    "hq_shift_events": ("text", "text", "text", "int8", "text", "int8", "int8", "text"),
    "hq_resolutions": ("text", "text", "text", "text", "text", "int8", "int8", "text", "int8"),
    "hq_card_limits": ("text", "text", "int8", "text", "int8", "int8", "int8", "int8", "int8"),
    "hq_card_outcomes": ("text", "text", "text", "int8", "text", "int8", "text"),
    "hq_resolution_effects": ("text", "int4", "text", "text", "text", "int8", "text", "int8"),
    "hq_superseded": ("text", "text", "text", "int8"),
}  # fmt: skip

# Each fact table's rows of one origin's events, for taking back what a revoked till
# wrote past its cut: (table, SQL selecting the rows' keys by origin and seq > cut).
REVOCABLE: dict[str, str] = {
    "hq_refund_lines": "refund_id IN (SELECT eid FROM hq_refunds WHERE origin = %s AND seq > %s)",
    "hq_sales": "origin = %s AND seq > %s",
    "hq_voids": "origin = %s AND seq > %s",
    "hq_refunds": "origin = %s AND seq > %s",
    "hq_stock_moves": "origin = %s AND seq > %s",
    "hq_stock_counts": "origin = %s AND seq > %s",
    "hq_catalog_writes": "origin = %s AND seq > %s",
    "hq_shift_events": "origin = %s AND seq > %s",
    "hq_resolutions": "origin = %s AND seq > %s",
    "hq_card_limits": "origin = %s AND seq > %s",
    "hq_card_outcomes": "origin = %s AND seq > %s",
    "hq_resolution_effects": "origin = %s AND seq > %s",
    "hq_superseded": "by_origin = %s AND by_seq > %s",
}


class Facts:
    """Rows gathered from one batch, per fact table, before one COPY each."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {name: [] for name in FACT_COLUMNS}
        self.catalog_skus: set[str] = set()
        # what a batch's resolutions may change in the catalog (`catalog.touched_skus`)
        self.resolved: set[str] = set()  # conflict ids resolved
        self.superseded: set[str] = set()  # catalog writes named by a supersede

    def add(self, events: Iterable[tuple[Event, Body]]) -> None:
        for ev, body in events:
            match body:
                case SaleCompleted():
                    self._sale(ev, body)
                case StockReceived():
                    self._move(ev, body.sku, "received", body.qty)
                case StockAdjusted():
                    self._move(ev, body.sku, "adjusted", body.delta)
                case _:
                    self._rare(ev, body)

    def _sale(self, ev: Event, body: SaleCompleted) -> None:
        pays = [_payment_row(p) for p in body.payments]
        self.rows["hq_sales"].append(
            (ev.id, stock_store(ev.origin), ev.origin, ev.seq, ev.hlc, body.receipt, body.total,
             body.change, body.shift, body.cashier, _JSONB_V1 + _json(body.lines),
             _JSONB_V1 + _json(pays), body.tax_mode)
        )  # fmt: skip

    def _move(self, ev: Event, sku: str, kind: str, delta: int) -> None:
        row = (ev.id, stock_store(ev.origin), sku, ev.hlc, ev.origin, ev.seq, kind, delta)
        self.rows["hq_stock_moves"].append(row)

    def _rare(self, ev: Event, body: Body) -> None:
        head = (ev.hlc, ev.origin, ev.seq)
        match body:
            case StockCounted():
                row: Row = (ev.id, stock_store(ev.origin), body.sku, *head, body.count)
                self.rows["hq_stock_counts"].append(row)
            case SaleVoided():
                self.rows["hq_voids"].append((ev.id, body.sale, *head, body.reason))
            case RefundIssued():
                self.rows["hq_refunds"].append(
                    (ev.id, body.sale, *head, body.amount, body.method, body.restock, body.reason)
                )
                for i, ln in enumerate(body.lines):
                    self.rows["hq_refund_lines"].append(
                        (ev.id, i, ln.line, ln.qty, ln.amount, ln.tax)
                    )
            case ProductUpserted() | PriceSet():
                self._catalog(ev, body)
            case _:
                self._admin(ev, body)

    def _catalog(self, ev: Event, body: ProductUpserted | PriceSet) -> None:
        self.catalog_skus.add(body.sku)
        head = (ev.id, body.sku, ev.hlc, ev.origin, ev.seq)
        if isinstance(body, ProductUpserted):
            tail: Row = ("product", body.name, body.price, body.tax_rate_bp, body.active)
        else:
            tail = ("price", None, body.price, None, None)
        self.rows["hq_catalog_writes"].append(head + tail)

    def _admin(self, ev: Event, body: Body) -> None:
        head = (ev.id,)
        match body:
            case ShiftOpened():
                row = (body.shift, "open", ev.hlc, ev.origin, ev.seq, body.float_amount)
                self.rows["hq_shift_events"].append((*head, *row, body.cashier))
            case ShiftClosed():
                row = (body.shift, "close", ev.hlc, ev.origin, ev.seq, body.counted_cash)
                self.rows["hq_shift_events"].append((*head, *row, ""))
            case ConflictResolved():
                self._resolution(ev, body)
            case _:
                self._cards(ev, body)

    def _resolution(self, ev: Event, body: ConflictResolved) -> None:
        """The resolution, what it does if effective (`conflict.effects`' rows) and the
        writes it supersedes; which of them count is read in views and `catalog.py`."""
        self.rows["hq_resolutions"].append(
            (ev.id, body.conflict, body.action, body.by, body.reason, body.price,
             ev.hlc, ev.origin, ev.seq)
        )  # fmt: skip
        self.rows["hq_resolution_effects"] += [
            (*row, ev.origin, ev.seq) for row in effects.effect_rows(ev, body)
        ]
        self.rows["hq_superseded"] += [(eid, ev.id, ev.origin, ev.seq) for eid in body.supersedes]
        self.resolved.add(body.conflict)
        self.superseded.update(body.supersedes)

    def _cards(self, ev: Event, body: Body) -> None:
        match body:
            case CardLimitsSet():  # the rows the SQLite fold keeps
                self.rows["hq_card_limits"].append(cards.limits_row(ev, body))
            case CardCaptured() | CardDeclined() | CardExpired():
                self.rows["hq_card_outcomes"].append(cards.outcome_row(ev, body))
            case _:
                pass  # a body type the read model does not use (key revocations, ...)


def _payment_row(p: Payment) -> Row:
    """A payment in hq_sales.payments as `conflict.state` keeps it in st_sales: [method,
    amount, last4, auth, reference], plus [approval, override_by] only when either is set."""
    row = (p.method, p.amount, p.card_last4, p.auth, p.reference)
    return (*row, p.approval, p.override_by) if p.approval or p.override_by else row


def products_of(
    writes: Sequence[tuple[str, Sequence[Sequence[Any]]]], policy: PricePolicy, window_ms: int
) -> tuple[list[Row], list[Row]]:
    """(hq_products rows, hq_store_prices rows) of the SKUs with a product write, from
    each SKU's catalog writes (eid, hlc, origin, seq, kind, name, price, tax_rate_bp,
    active), by the policy: `conflict.catalog`'s rules, as the SQLite fold applies them."""
    products: list[Row] = []
    overrides: list[Row] = []
    for sku, rows in writes:
        found = [
            Write(e, h, o, s, k, n, p, t, None if a is None else int(a))
            for e, h, o, s, k, n, p, t, a in rows
        ]
        product = effective(sku, found, policy, window_ms) if found else None
        if product is None:
            continue
        sku_, name, price, tax, active, peid, preid = product
        products.append((sku_, name, price, tax, bool(active), peid, preid))
        overrides += store_prices(sku, found, policy, window_ms)
    return products, overrides
