"""The typed bodies of events and their registry (`BODY_TYPES`): what a sale, a refund,
a stock move, a catalog write, a shift, a resolution or a key decision says, with the
rules msgspec constraints express and those each body's `check()` adds.

Split from `core.events` (the envelope and the canonical encoding), which re-exports
every name here: callers keep importing bodies from `core.events`. The `Body` base and
field types live in `core.body_base`, the card payment bodies in `core.card_bodies`;
this module re-exports both.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from msgspec import Meta, Struct

from core.body_base import (
    ATTEMPT_SCHEMA,
    CARD_SCHEMA,
    SKU_PATTERN,
    TAX_SCHEMA,
    Body,
    CardToken,
    EventId,
    Id,
    Last4,
    Money,
    PositiveQty,
    Sku,
    TaxRate,
    Text,
    by_schema,
    check_sku,
)
from core.card_bodies import (
    CARD_ACTIONS,
    CARD_OUTCOME_TYPES,
    CardCaptured,
    CardDeclined,
    CardExpired,
    CardLimitsSet,
    PaymentId,
    parse_payment_id,
    payment_id,
)

__all__ = [
    "BODY_TYPES",
    "CARD_ACTIONS",
    "CARD_OUTCOME_TYPES",
    "HQ_ONLY_TYPES",
    "SKU_PATTERN",
    "Body",
    "CardCaptured",
    "CardDeclined",
    "CardExpired",
    "CardLimitsSet",
    "CardToken",
    "ConflictResolved",
    "EventId",
    "Id",
    "KeyRevoked",
    "KeyRotated",
    "Last4",
    "LogSigned",
    "Money",
    "Payment",
    "PaymentId",
    "PositiveQty",
    "PriceSet",
    "ProductUpserted",
    "RefundIssued",
    "RefundLine",
    "ResolvedMove",
    "SaleCompleted",
    "SaleLine",
    "SaleVoided",
    "ShiftClosed",
    "ShiftOpened",
    "Sku",
    "StockAdjusted",
    "StockCounted",
    "StockReceived",
    "TaxRate",
    "Text",
    "by_schema",
    "check_sku",
    "parse_payment_id",
    "payment_id",
]

# --- bodies ---------------------------------------------------------------------------

# Parts are gc=False like `Body` itself, for the reason `core.body_base` gives.


class SaleLine(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    sku: Sku
    qty: PositiveQty
    unit_price: Money
    discount: Money = 0
    # The tax in the line, computed by the till from the catalog's rate at the sale
    # (schema 6; 0 in lines before it). Included in `total`, or added to it when the
    # sale's tax_mode is "exclusive" (see SaleCompleted.total).
    tax: Money = 0
    tax_rate_bp: TaxRate = 0  # schema 6: the catalog's rate at the sale

    @property
    def total(self) -> int:
        """The line's goods at its price less its discount (tax-exclusive: before tax)."""
        return self.qty * self.unit_price - self.discount


# An authorisation's idempotency key as the till makes it (`replicas.payments.keys.auth_key`):
# the till's id and a base32 hash, nothing else (no free text beside the till's id).
AttemptKey = Annotated[str, Meta(max_length=256, pattern=r"^(?:[^|]{1,200}\|)?a\|[a-z2-7]{24}$")]


class Payment(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """How part of a sale was paid. A card payment carries what the terminal and the
    processor give (token, last 4, the terminal's `reference`), never PAN, track or CVV.
    `auth` is decided by the till, never the client: "online" if the processor approved
    it before the sale was answered (`approval` is its reference, schema 7), "deferred"
    if it could not be reached and the payment was taken offline under the floor limits
    or, beyond them, on a manager's word (`override_by`, schema 7); a deferred payment is
    forwarded later and its outcome is a `card.*` event naming its `payment_id`. A
    deferred payment whose authorisation was sent but got no answer (a timeout, a reply
    lost or garbled) names that request's idempotency key (`attempt`, schema 8): the
    processor may have approved it, so the capture names it and is not charged twice.
    An approved (online) payment names the key it was approved under too: a till that
    stopped mid-sale finds by it which of its asks a stored sale holds."""

    method: Literal["cash", "card", "other"]
    amount: Annotated[int, Meta(gt=0, le=10**12)]
    card_token: CardToken | None = None
    card_last4: Last4 | None = None
    auth: Literal["online", "deferred"] | None = None  # deferred: store-and-forward
    reference: Text = ""
    approval: Text = ""  # schema 7: the processor's approval reference (online)
    override_by: Text = ""  # schema 7: who approved a deferred card beyond the floor limits
    attempt: AttemptKey = ""  # schema 8: see the docstring


class SaleCompleted(Body, frozen=True):
    TYPE: ClassVar[str] = "sale.completed"
    receipt: Id
    lines: Annotated[list[SaleLine], Meta(min_length=1, max_length=500)]
    payments: Annotated[list[Payment], Meta(min_length=1, max_length=20)]
    change: Money = 0
    shift: Text = ""
    cashier: Text = ""
    approved_by: Text = ""  # schema 2: the manager credential that approved a price override
    approval_reason: Text = ""  # schema 2
    # Schema 6: the site's prices include tax, or exclude it (the lines' tax is then
    # added to the total). None: a sale made before tills computed tax (not recorded).
    tax_mode: Literal["inclusive", "exclusive"] | None = None

    @property
    def total(self) -> int:
        """What the customer pays."""
        return sum(self.line_total(line) for line in self.lines)

    def line_total(self, line: SaleLine) -> int:
        """What the customer pays for one of this sale's lines."""
        return line.total + line.tax if self.tax_mode == "exclusive" else line.total

    def min_schema(self) -> int:
        if any(p.attempt for p in self.payments):
            return ATTEMPT_SCHEMA
        if any(p.approval or p.override_by for p in self.payments):
            return CARD_SCHEMA
        if self.tax_mode is not None:
            return TAX_SCHEMA
        return 2 if self.approved_by or self.approval_reason else 1

    def check(self) -> None:
        total = 0
        for i, line in enumerate(self.lines):  # plain loop: this runs per ingested sale
            check_sku(line.sku)
            value = line.qty * line.unit_price
            if line.discount > value:
                raise ValueError(f"line {i}: discount exceeds line value")
            value -= line.discount
            if self.tax_mode == "exclusive":
                value += line.tax
            elif line.tax > value:
                raise ValueError(f"line {i}: tax exceeds the line's value it is included in")
            total += value
        paid = 0
        for p in self.payments:
            paid += p.amount
            if p.method != "cash" or p.card_token is not None or p.card_last4 is not None:
                _check_payment(p)
        if paid - self.change != total:
            raise ValueError(f"payments {paid} - change {self.change} != total {total}")


def _check_payment(p: Payment) -> None:
    if p.method == "card":
        if p.card_token is None or p.card_last4 is None or p.auth is None:
            raise ValueError("card payment needs card_token, card_last4 and auth")
        if p.override_by and p.auth != "deferred":
            raise ValueError("only a deferred card payment is approved beyond the floor limits")
    elif p.card_token is not None or p.card_last4 is not None or p.approval or p.override_by:
        raise ValueError(f"{p.method} payment must not carry card data")


class SaleVoided(Body, frozen=True):
    TYPE: ClassVar[str] = "sale.voided"
    sale: EventId
    reason: Text = ""
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)


class RefundLine(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    line: Annotated[int, Meta(ge=0, lt=500)]  # index into the sale's lines
    qty: PositiveQty
    amount: Money  # tax included
    tax: Money = 0  # schema 6: the tax in `amount`, given back


class RefundIssued(Body, frozen=True):
    TYPE: ClassVar[str] = "refund.issued"
    sale: EventId
    lines: Annotated[list[RefundLine], Meta(min_length=1, max_length=500)]
    method: Literal["cash", "card", "other"] = "cash"
    restock: bool = True
    reason: Text = ""
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        if any(line.tax for line in self.lines):
            return TAX_SCHEMA
        return by_schema(self.by)

    def check(self) -> None:
        for i, line in enumerate(self.lines):
            if line.tax > line.amount:
                raise ValueError(f"refund line {i}: tax exceeds the amount it is part of")

    @property
    def amount(self) -> int:
        return sum(line.amount for line in self.lines)


class StockReceived(Body, frozen=True):
    TYPE: ClassVar[str] = "stock.received"
    sku: Sku
    qty: PositiveQty
    reference: Text = ""
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)

    def check(self) -> None:
        check_sku(self.sku)


class StockAdjusted(Body, frozen=True):
    TYPE: ClassVar[str] = "stock.adjusted"
    sku: Sku
    delta: Annotated[int, Meta(ge=-(10**9), le=10**9)]
    reason: Text
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)

    def check(self) -> None:
        check_sku(self.sku)
        if self.delta == 0:
            raise ValueError("delta must not be 0")


class StockCounted(Body, frozen=True):
    """The absolute count at the event's HLC moment: later deltas add to it."""

    TYPE: ClassVar[str] = "stock.counted"
    sku: Sku
    count: Annotated[int, Meta(ge=0, le=10**9)]
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)

    def check(self) -> None:
        check_sku(self.sku)


class ProductUpserted(Body, frozen=True):
    TYPE: ClassVar[str] = "product.upserted"
    sku: Sku
    name: Text
    price: Money
    tax_rate_bp: TaxRate = 0
    active: bool = True
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)

    def check(self) -> None:
        check_sku(self.sku)


class PriceSet(Body, frozen=True):
    TYPE: ClassVar[str] = "price.set"
    sku: Sku
    price: Money
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)

    def check(self) -> None:
        check_sku(self.sku)


class ShiftOpened(Body, frozen=True):
    TYPE: ClassVar[str] = "shift.opened"
    shift: Id
    float_amount: Money
    cashier: Text = ""


class ShiftClosed(Body, frozen=True):
    TYPE: ClassVar[str] = "shift.closed"
    shift: Id
    counted_cash: Money
    by: Text = ""  # schema 3: who made it, a person (or an API credential)

    def min_schema(self) -> int:
        return by_schema(self.by)


class ResolvedMove(Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """A stock move a resolution makes if it is the effective one (schema 5)."""

    sku: Sku
    delta: Annotated[int, Meta(ge=-(10**9), le=10**9)]


class ConflictResolved(Body, frozen=True):
    """A manager's decision on a detected conflict, with what it changes.

    Schema 5: the body carries its own effects, and the fold applies those of one
    resolution per conflict only (the earliest by (hlc, origin, seq)): `moves` (stock
    moves in the author's store: a compensation), `count` of `sku` (a recount), or
    `price` of `sku` (choose_price). Before schema 5 a resolution carried none and the
    manager's tool appended compensating events after it (`stock.adjusted`,
    `stock.counted`, `price.set`): those are read as what they are, plain events that
    apply whichever resolution wins.

    `supersede` (schema 4) names catalog writes (`supersedes`, event ids) that lose to
    every other write of their SKU whatever their HLC: the way out of a write dated far
    ahead, which would otherwise win last-writer-wins until real time passes it. Its
    `conflict` is `catalog:<sku>`; the fold honours it only from a replica that may
    have written what it supersedes (`conflict.catalog`)."""

    TYPE: ClassVar[str] = "conflict.resolved"
    conflict: Id
    action: Literal[
        "accept", "compensate", "choose_price", "recount", "supersede",
        "paid_other_way", "written_off", "refund_reversed",
    ]  # fmt: skip
    by: Text
    reason: Text = ""
    price: Money | None = None
    # The `noqa`s: msgspec copies a Struct's default list per instance; ruff sees `Body`
    # only as an import here, not as the Struct it is.
    supersedes: Annotated[list[EventId], Meta(max_length=100)] = []  # noqa: RUF012 schema 4
    sku: Sku | None = None  # schema 5: what `price` or `count` is of
    count: Annotated[int, Meta(ge=0, le=10**9)] | None = None  # schema 5
    moves: Annotated[list[ResolvedMove], Meta(max_length=500)] = []  # noqa: RUF012 schema 5

    def min_schema(self) -> int:
        if self.action in CARD_ACTIONS:
            return CARD_SCHEMA
        if self.sku is not None or self.count is not None or self.moves:
            return 5
        return 4 if self.supersedes or self.action == "supersede" else 1

    def check(self) -> None:
        if (self.action == "supersede") != bool(self.supersedes):
            raise ValueError("supersede names the writes it supersedes, and only it does")
        if len(set(self.supersedes)) != len(self.supersedes):
            raise ValueError("supersedes names a write twice")
        for move in self.moves:
            check_sku(move.sku)
            if move.delta == 0:
                raise ValueError("a move's delta must not be 0")
        if self.sku is not None:
            check_sku(self.sku)
        if self.count is not None and (self.sku is None or self.action != "recount"):
            raise ValueError("count is a recount's, and needs its sku")
        if self.moves and self.action != "compensate":
            raise ValueError("moves are a compensation's")


class KeyRevoked(Body, frozen=True):
    """HQ's word that `replica` wrote nothing after seq `after_seq`: its key was stolen,
    or the machine is gone. Its later events are still stored and replicated (so every
    replica holds the same events) but never folded into the state, on every replica,
    in whatever order the revocation and those events arrive. A replacement machine
    takes a new replica id."""

    TYPE: ClassVar[str] = "key.revoked"
    replica: Id
    after_seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    reason: Text = ""


class KeyRotated(Body, frozen=True):
    """HQ's word that `replica` signs with `public_key` from seq `from_seq` on, its older
    key below it (`core.keys`). Events of that replica at or past `from_seq` signed by
    the old key are refused on every replica, and held ones signed by the new key are
    applied. Only HQ writes it: the replica itself chose the seq and made the key, and
    HQ's admin vouches for it (`POST /keys/{replica}/rotate`)."""

    TYPE: ClassVar[str] = "key.rotated"
    replica: Id
    public_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{43}$")]  # base64url, 32 bytes
    from_seq: Annotated[int, Meta(ge=1, le=2**63 - 1)]
    reason: Text = ""


class LogSigned(Body, frozen=True):
    """An origin's first signed event after a history written before its site had
    signing keys: its signature, over a hash that chains down to seq 1, vouches for the
    `unsigned` events below it on every replica that holds them. Not state."""

    TYPE: ClassVar[str] = "log.signed"
    unsigned: Annotated[int, Meta(ge=0, le=2**63 - 1)]


# Types only HQ may write, as only HQ's API writes them: products are the chain's to
# define (a till sets store prices, never products). Ingest refuses them from any other
# origin, so a till's key or a bug cannot define the chain's catalog.
HQ_ONLY_TYPES = frozenset(
    {ProductUpserted.TYPE, KeyRevoked.TYPE, KeyRotated.TYPE, CardLimitsSet.TYPE}
)

BODY_TYPES: dict[str, type[Body]] = {
    cls.TYPE: cls
    for cls in (
        SaleCompleted,
        SaleVoided,
        RefundIssued,
        StockReceived,
        StockAdjusted,
        StockCounted,
        ProductUpserted,
        PriceSet,
        ShiftOpened,
        ShiftClosed,
        ConflictResolved,
        KeyRevoked,
        KeyRotated,
        LogSigned,
        CardLimitsSet,
        CardCaptured,
        CardDeclined,
        CardExpired,
    )
}
