"""The card payment bodies: HQ's floor limits (`card.limits_set`), the outcomes of a
deferred payment (`card.captured`, `card.declined`, `card.expired`), the payment ids
they name, and what a manager may decide about a declined card (`CARD_ACTIONS`).

Split from `core.bodies`, which re-exports every name here, as `core.events` does:
callers keep importing these from `core.events`. The card payment itself (`Payment`)
is part of a sale and stays with `SaleCompleted` in `core.bodies`.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from core.body_base import Body, Money, Text

__all__ = [
    "CARD_ACTIONS",
    "CARD_OUTCOME_TYPES",
    "CardCaptured",
    "CardDeclined",
    "CardExpired",
    "CardLimitsSet",
    "PaymentId",
    "parse_payment_id",
    "payment_id",
]


def payment_id(sale_id: str, index: int) -> str:
    """The id of a sale's `index`-th payment ("s1/t1:42#0"): the processor's idempotency
    key when it is forwarded, and what the `card.*` outcome events name."""
    return f"{sale_id}#{index}"


def parse_payment_id(pid: str) -> tuple[str, int]:
    """ "s1/t1:42#0" -> ("s1/t1:42", 0)."""
    sale, _, index = pid.rpartition("#")
    return sale, int(index)


# What a store manager decides about a declined or expired card payment (schema 7):
# the customer paid another way, the amount is written off, or the goods came back
# (a refund reversed the sale).
CARD_ACTIONS = ("paid_other_way", "written_off", "refund_reversed")

PaymentId = Annotated[
    str, Meta(min_length=5, max_length=110, pattern=r"^[^:#]+:[1-9][0-9]*#[0-9]{1,2}$")
]


class CardLimitsSet(Body, frozen=True):
    """HQ's floor limits for card payments a till takes while it cannot reach the
    processor, for `store` ('' = every store without limits of its own). The latest
    write (by hlc, origin, seq) for a store is in force. A till refuses a deferred card
    payment over `per_payment`, or that would take what it holds unforwarded beyond
    `till_total` or `till_count`; a deferred payment not forwarded within `max_age_s`
    expires (`card.expired`)."""

    TYPE: ClassVar[str] = "card.limits_set"
    per_payment: Money
    till_total: Money
    till_count: Annotated[int, Meta(ge=0, le=10**6)]
    max_age_s: Annotated[int, Meta(ge=60, le=90 * 86_400)]
    store: Text = ""
    by: Text = ""


class CardCaptured(Body, frozen=True):
    """The processor captured a deferred payment (`reference`: its capture id)."""

    TYPE: ClassVar[str] = "card.captured"
    payment: PaymentId
    reference: Text = ""


class CardDeclined(Body, frozen=True):
    """The processor declined a deferred payment: the store is owed its amount."""

    TYPE: ClassVar[str] = "card.declined"
    payment: PaymentId
    reason: Text = ""
    reference: Text = ""


class CardExpired(Body, frozen=True):
    """A deferred payment was not forwarded within its store's `max_age_s`: never sent."""

    TYPE: ClassVar[str] = "card.expired"
    payment: PaymentId


# Outcomes of a deferred payment: only a replica of the payment's store writes them
# (it holds the sale and forwards it); ingest refuses one from anywhere else.
CARD_OUTCOME_TYPES = frozenset({CardCaptured.TYPE, CardDeclined.TYPE, CardExpired.TYPE})
