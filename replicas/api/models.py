"""HTTP models of the till API, and their conversion to the msgspec event bodies.

pydantic lives at this edge only: it gives clients field-level 422s and the OpenAPI
schema. Every model is strict, so `12.5` or `"12"` where money or a quantity is
expected is refused rather than coerced (money is always int minor units), and extra
fields are refused, so a stray `card_number` field never slips through unseen.

The bodies built here are validated once more by `encode_body` when the log appends
them (cross-field rules such as "payments - change == total"); the API maps that
`SchemaViolation` to a 422 as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from conflict.resolve import Action
from core.events import (
    Payment,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    SaleCompleted,
    SaleLine,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
)
from core.pan import contains_card_number, control_character
from replicas.api.tax import Refunded, TaxMode, taxed

__all__ = [
    "SKU_PATTERN",
    "CatalogOut",
    "DigestOut",
    "EventOut",
    "ExposureView",
    "HealthOut",
    "LineView",
    "PaymentIn",
    "PaymentView",
    "PriceIn",
    "ProductIn",
    "ProductView",
    "ReceiptView",
    "RefundIn",
    "RefundLineIn",
    "RefundOut",
    "ResolveIn",
    "SaleIn",
    "SaleLineIn",
    "SaleOut",
    "SaleTax",
    "SaleView",
    "SalesSummaryView",
    "ShiftCloseIn",
    "ShiftOpenIn",
    "ShiftView",
    "ShopOut",
    "StatusOut",
    "StockAdjustIn",
    "StockCountIn",
    "StockLevel",
    "StockOut",
    "StockReceiveIn",
    "VoidIn",
]

SKU_PATTERN = r"^[A-Za-z0-9._-]+$"  # the same rule as the event layer's Sku

Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=SKU_PATTERN)]
Money = Annotated[int, Field(ge=0, le=10**12)]
PositiveMoney = Annotated[int, Field(gt=0, le=10**12)]
Qty = Annotated[int, Field(gt=0, le=10**9)]
Text = Annotated[str, Field(max_length=200)]
Id = Annotated[str, Field(min_length=1, max_length=80)]


def _no_pan(value: str, identifier: bool = False) -> str:
    if contains_card_number(value, identifier=identifier):
        # The value itself is never echoed back (see api._request_error).
        raise ValueError(
            "looks like a full card number, which the till never stores: leave it out"
            " (a card payment sends only the processor token and the last 4 digits)"
        )
    if (control := control_character(value)) is not None:
        raise ValueError(f"holds a control character ({control}); text fields take none")
    return value


# Free text a client sends is stored in the log and replicated to every till and HQ: a
# card number typed into any of it (a cashier, a reason, a receipt) is refused here.
NoPanText = Annotated[Text, AfterValidator(_no_pan)]
NoPanId = Annotated[Id, AfterValidator(lambda v: _no_pan(v, identifier=True))]
NoPanName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_pan)]
CardToken = Annotated[str, Field(min_length=8, max_length=128), AfterValidator(_no_pan)]
Last4 = Annotated[str, Field(pattern=r"^[0-9]{4}$")]


class _In(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


# `by` and `cashier`: see replicas.api.auth.person_of.
_BY = (
    "who does it (a person's id). A person's token fills it in and may name no one else;"
    " with a device's token, default: the token itself"
)
_CASHIER = (
    "the cashier's id. A person's token fills it in and may name no one else;"
    " with a device's token, default: none"
)


# --- sales -------------------------------------------------------------------------


class SaleLineIn(_In):
    sku: Sku
    qty: Qty
    unit_price: Money | None = Field(None, description="default: the current catalog price")
    discount: Money = 0


class PaymentIn(_In):
    method: Literal["cash", "card", "other"]
    amount: PositiveMoney
    card_token: CardToken | None = None
    card_last4: Last4 | None = None
    auth: Literal["online", "deferred"] | None = Field(
        None,
        description="not read: the till decides (online only with the processor's approval,"
        " else deferred under the floor limits); the answer's payments say which",
    )
    reference: NoPanText = Field("", description="the terminal's reference for a card")
    override: bool = Field(
        False,
        description="card only: take it offline beyond the floor limits (a manager's token;"
        " recorded on the payment)",
    )

    @model_validator(mode="after")
    def _card_fields(self) -> PaymentIn:
        if self.method == "card":
            if self.card_token is None or self.card_last4 is None:
                raise ValueError("a card payment needs card_token and card_last4")
        elif self.card_token is not None or self.card_last4 is not None or self.auth:
            raise ValueError(f"a {self.method} payment must not carry card data")
        elif self.override:
            raise ValueError("override is for a card payment taken offline")
        return self

    def to_payment(self) -> Payment:
        """The payment before authorisation: a card one "deferred" until the processor
        approves it (`api.cards.authorise_cards`)."""
        auth: Literal["deferred"] | None = "deferred" if self.method == "card" else None
        return Payment(
            method=self.method, amount=self.amount, card_token=self.card_token,
            card_last4=self.card_last4, auth=auth, reference=self.reference,
        )  # fmt: skip


class SaleIn(_In):
    lines: Annotated[list[SaleLineIn], Field(min_length=1, max_length=500)]
    payments: Annotated[list[PaymentIn], Field(min_length=1, max_length=20)]
    change: Money | None = Field(None, description="default: whatever cash was paid over the total")
    receipt: NoPanId | None = Field(None, description="default: <store>-<till>-<counter>")
    shift: NoPanText = ""
    cashier: NoPanText = Field(
        default="", description=_CASHIER + " (a manager's token names another to approve a price)"
    )
    approval_reason: NoPanText = Field(
        "", description="why a price differs from the catalog's (a manager's token approves)"
    )

    @model_validator(mode="after")
    def _change_is_cash(self) -> SaleIn:
        """Change is handed back in cash: more than the cash tendered would leave the
        drawer (and the payments report) short by the difference."""
        cash = sum(p.amount for p in self.payments if p.method == "cash")
        if self.change is not None and self.change > cash:
            raise ValueError(f"change {self.change} is more than the cash tendered ({cash})")
        return self

    def to_body(self, prices: Mapping[str, int], receipt: str, tax: SaleTax) -> SaleCompleted:
        """The event; `prices` must hold a price for every line without `unit_price`;
        each line is taxed at `tax`'s rate for its SKU (`replicas.api.tax`)."""
        lines = [SaleLine(ln.sku, ln.qty, _price(ln, prices), ln.discount) for ln in self.lines]
        payments = [p.to_payment() for p in self.payments]
        sale = SaleCompleted(
            receipt=receipt, lines=lines, payments=payments, change=self.change or 0,
            shift=self.shift, cashier=self.cashier,
        )  # fmt: skip
        sale = taxed(sale, tax.rates, tax.mode)
        if self.change is None:
            sale = msgspec.structs.replace(sale, change=default_change(sale))
        return sale


class SaleTax(NamedTuple):
    """How a sale is taxed: the site's mode and the rate of each SKU at the sale."""

    mode: TaxMode
    rates: Mapping[str, int]


def _price(line: SaleLineIn, prices: Mapping[str, int]) -> int:
    return line.unit_price if line.unit_price is not None else prices[line.sku]


def default_change(sale: SaleCompleted) -> int:
    """Cash tendered over the total comes back as change; card overpayment does not."""
    over = sum(p.amount for p in sale.payments) - sale.total
    cash = sum(p.amount for p in sale.payments if p.method == "cash")
    return over if 0 < over <= cash else 0


class ErrorOut(BaseModel):
    """Every error answer: what is wrong, never the offending input (it may hold card
    data). Validation errors list each field's location, message and type."""

    detail: str | list[dict[str, Any]]


class PaymentView(BaseModel):
    method: str
    amount: int
    last4: str | None
    auth: str | None = Field(description="cards: online (the processor approved) or deferred")
    reference: str | None
    approval: str | None = Field(default=None, description="the processor's approval (online)")
    override_by: str | None = Field(
        default=None, description="who took it offline beyond the floor limits"
    )


class SaleOut(BaseModel):
    sale_id: str = Field(description="origin:seq")
    receipt: str
    total: int
    change: int
    hlc: int
    at: str = Field(description="the HLC's wall time, ISO 8601 UTC")
    payments: list[PaymentView] = Field(
        default_factory=list, description="as stored: how each card was authorised"
    )


class VoidIn(_In):
    reason: NoPanText = ""
    by: NoPanText = Field(default="", description=_BY)


class RefundLineIn(_In):
    line: Annotated[int, Field(ge=0, lt=500)]
    qty: Qty
    amount: Money | None = Field(
        None,
        description="default: the line's total (tax included) pro rata by quantity; its"
        " tax is given back in proportion",
    )


class RefundIn(_In):
    lines: Annotated[list[RefundLineIn], Field(min_length=1, max_length=500)]
    method: Literal["cash", "card", "other"] | None = Field(
        None, description="default: the sale's first payment method"
    )
    restock: bool = True
    reason: NoPanText = ""
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sale_id: str, amounts: list[Refunded], method: str) -> RefundIssued:
        lines = [
            RefundLine(line=ln.line, qty=ln.qty, amount=given.amount, tax=given.tax)
            for ln, given in zip(self.lines, amounts, strict=True)
        ]
        return RefundIssued(
            sale=sale_id, lines=lines, method=method,  # type: ignore[arg-type]
            restock=self.restock, reason=self.reason, by=self.by,
        )  # fmt: skip


class RefundOut(BaseModel):
    refund_id: str
    sale_id: str
    amount: int
    tax: int = Field(description="the tax given back, part of amount")
    hlc: int
    at: str


class LineView(BaseModel):
    line: int
    sku: str
    qty: int
    unit_price: int
    discount: int
    tax: int = Field(description="the tax in the line (0 in sales made before tax was computed)")
    tax_rate_bp: int = Field(0, description="the catalog's rate at the sale, basis points")


class DeliveryView(BaseModel):
    """Is this sale safe beyond this till? As far as this replica knows from the
    vectors its peers announced (they lag by up to the announce interval)."""

    held_by: list[str] = Field(description="replicas holding the sale durably, this one included")
    at_hq: bool = Field(description="HQ holds it durably: it survives this store's loss")


class SaleView(BaseModel):
    id: str
    origin: str
    seq: int
    hlc: int
    receipt: str
    total: int
    change: int
    shift: str
    cashier: str
    tax_mode: Literal["inclusive", "exclusive"] | None = Field(
        None, description="prices included or excluded tax; none: made before tax was computed"
    )
    voided: bool
    refunded: int
    lines: list[LineView]
    payments: list[PaymentView]
    delivery: DeliveryView | None = Field(
        default=None, description="who holds the sale (GET /sales/{id} only)"
    )


class ReceiptView(BaseModel):
    receipt: str
    sales: list[SaleView] = Field(description="more than one is a receipt collision")


# --- stock ---------------------------------------------------------------------------


class StockReceiveIn(_In):
    qty: Qty
    reference: NoPanText = ""
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sku: str) -> StockReceived:
        return StockReceived(sku=sku, qty=self.qty, reference=self.reference, by=self.by)


class StockAdjustIn(_In):
    delta: Annotated[int, Field(ge=-(10**9), le=10**9)] = Field(description="signed, not 0")
    reason: NoPanName
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sku: str) -> StockAdjusted:
        return StockAdjusted(sku=sku, delta=self.delta, reason=self.reason, by=self.by)


class StockCountIn(_In):
    count: Annotated[int, Field(ge=0, le=10**9)]
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sku: str) -> StockCounted:
        return StockCounted(sku=sku, count=self.count, by=self.by)


class StockLevel(BaseModel):
    sku: str
    on_hand: int


class StockOut(StockLevel):
    event_id: str
    hlc: int


# --- catalog ------------------------------------------------------------------------


class ProductIn(_In):
    name: NoPanText
    price: Money
    tax_rate_bp: Annotated[int, Field(ge=0, le=10_000)] = 0
    active: bool = True
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sku: str) -> ProductUpserted:
        return ProductUpserted(
            sku=sku, name=self.name, price=self.price,
            tax_rate_bp=self.tax_rate_bp, active=self.active, by=self.by,
        )  # fmt: skip


class PriceIn(_In):
    price: Money
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, sku: str) -> PriceSet:
        return PriceSet(sku=sku, price=self.price, by=self.by)


class ProductView(BaseModel):
    sku: str
    name: str
    price: int = Field(description="the price this replica's store sells at")
    tax_rate_bp: int
    active: bool
    chain_price: int = Field(description="HQ's price for the chain")
    overrides: dict[str, int] = Field(
        description="store -> its own price, where a store's override is in effect"
    )


# --- shifts ---------------------------------------------------------------------------


class ShiftOpenIn(_In):
    shift: NoPanId | None = Field(None, description="default: generated, unique per till")
    float_amount: Money
    cashier: NoPanText = Field(default="", description=_CASHIER)

    def to_body(self, shift: str) -> ShiftOpened:
        return ShiftOpened(shift=shift, float_amount=self.float_amount, cashier=self.cashier)


class ShiftCloseIn(_In):
    counted_cash: Money
    by: NoPanText = Field(default="", description=_BY)

    def to_body(self, shift: str) -> ShiftClosed:
        return ShiftClosed(shift=shift, counted_cash=self.counted_cash, by=self.by)


class ShiftView(BaseModel):
    shift: str
    sales: int
    gross: int
    voided: int
    refunded: int
    net: int
    opened_by: str | None
    cashier: str | None
    float: int
    cash_taken: int
    cash_refunded: int
    expected_cash: int
    closed_by: str | None
    counted_cash: int | None
    over_short: int | None
    tax: int = Field(description="tax in the shift's sales less what their refunds gave back")


# --- conflicts ------------------------------------------------------------------------


ResolveEventId = Annotated[str, Field(pattern=r"^[^:]+:[1-9][0-9]*$", max_length=100)]


class ResolveIn(_In):
    action: Action
    by: NoPanText = Field(default="", description=_BY)
    reason: NoPanText = ""
    price: Money | None = Field(None, description="with choose_price, minor units")
    count: Annotated[int, Field(ge=0, le=10**9)] | None = Field(
        None, description="with recount, the counted stock"
    )
    supersedes: Annotated[list[ResolveEventId], Field(max_length=100)] | None = Field(
        None,
        description="with supersede (conflict id `catalog:<sku>`): the catalog writes it "
        "takes out of the catalog whatever their HLC, as event ids (origin:seq)",
    )


# --- generic and status ---------------------------------------------------------------


class EventOut(BaseModel):
    event_id: str
    hlc: int
    at: str


class CatalogOut(EventOut):
    product: ProductView | None = Field(
        description="the effective product after this write (the price policy decides)"
    )


class SalesSummaryView(BaseModel):
    sales: int
    gross: int
    voided: int
    refunded: int
    net: int


class ClockAheadView(BaseModel):
    events: int
    newest: str = Field(description="the newest such event's time, ISO 8601 UTC")
    ahead_ms: int = Field(description="how far it was ahead of this replica's clock, now")


class StatusOut(BaseModel):
    replica_id: str
    online: bool
    version_vector: dict[str, int]
    events: int
    pending: int = Field(description="held: waiting for a missing predecessor")
    quarantined: int
    clock_ahead: dict[str, ClockAheadView] = Field(
        default_factory=dict,
        description="since this replica started: per origin, events received too far ahead"
        " of this replica's clock (kept and applied; the clock was not dragged forward)",
    )
    unsynced_to_hq: int = Field(
        description="own events (sales, refunds, stock moves, ...) HQ does not yet hold durably"
    )
    sales: SalesSummaryView
    sync: dict[str, Any] = Field(description="the sync engine's status; {} without network")
    digest: str | None = Field(description="state digest; null when ?digest=false")
    open_conflicts: int | None = Field(
        default=None, description="unresolved business conflicts; null when ?conflicts=false"
    )
    card_exposure: ExposureView | None = Field(
        default=None,
        description="this store's (at HQ: every store's) offline card payments outstanding",
    )
    evidence: dict[str, int] | None = Field(
        default=None,
        description="refused events kept as evidence, by kind (SignatureError: not its"
        " origin's writing; Equivocation: its origin signed two versions); null when"
        " ?conflicts=false",
    )
    stale_snapshot: dict[str, str] = Field(
        default_factory=dict,
        description="per origin, why this log's compaction snapshot holds events that are no"
        " longer state (revoked, or signed by a retired key): restore it from HQ",
    )


class ExposureView(BaseModel):
    """Card payments taken offline and not yet captured, declined or expired: the risk
    the store carries (`conflict.reports.offline_exposure`)."""

    payments: int
    amount: int
    oldest_age_s: int | None = Field(description="seconds since the oldest was taken")


class ShopOut(BaseModel):
    replica_id: str
    store: str
    store_name: str = Field(description="the name receipts show (site.json store_names)")
    tax_mode: Literal["inclusive", "exclusive"] = Field(
        description="inclusive: catalog prices hold the tax; exclusive: tax is added to them"
    )


class DigestOut(BaseModel):
    digest: str


class HealthOut(BaseModel):
    ok: bool
    replica_id: str
