"""The groundwork every event body stands on: the `Body` base, the field types (SKU,
money, quantities, ids, text, card token and last 4), the SKU rule and the schema
numbers that newer fields raise a body to.

Split from `core.bodies` so the card bodies (`core.card_bodies`) and the others share it
without importing each other; `core.bodies` and `core.events` re-export every name here.
"""

from __future__ import annotations

import string
from typing import Annotated, ClassVar

from msgspec import Meta, Struct

__all__ = [
    "ATTEMPT_SCHEMA",
    "CARD_SCHEMA",
    "SKU_PATTERN",
    "TAX_SCHEMA",
    "Body",
    "CardToken",
    "EventId",
    "Id",
    "Last4",
    "Money",
    "PositiveQty",
    "Sku",
    "TaxRate",
    "Text",
    "by_schema",
    "check_sku",
]

SKU_PATTERN = r"^[A-Za-z0-9._-]+$"
# The SKU rule is SKU_PATTERN as `re.search` reads it, and is checked by `check_sku` from
# each body's `check()`, not by msgspec: msgspec calls into `re` per string, ~1.5 µs per
# SKU, which was most of decoding a one-line sale. The JSON schema still states the rule.
Sku = Annotated[str, Meta(min_length=1, max_length=64, extra_json_schema={"pattern": SKU_PATTERN})]
Money = Annotated[int, Meta(ge=0, le=10**12)]
PositiveQty = Annotated[int, Meta(gt=0, le=10**9)]
Text = Annotated[str, Meta(max_length=200)]
Id = Annotated[str, Meta(min_length=1, max_length=80)]
EventId = Annotated[str, Meta(min_length=3, max_length=100, pattern=r"^[^:]+:[1-9][0-9]*$")]
Last4 = Annotated[str, Meta(pattern=r"^[0-9]{4}$")]
CardToken = Annotated[str, Meta(min_length=8, max_length=128)]
TaxRate = Annotated[int, Meta(ge=0, le=10_000)]  # basis points: 2000 is 20 %

# Schema 6: a sale line states the tax the till computed from the catalog's rate at the
# sale (`tax_rate_bp`, `tax_exclusive`), a refund line the tax it gives back (`tax`).
TAX_SCHEMA = 6
# Schema 7: a card payment's processor approval and manager override (`Payment`), and
# the decisions on a declined card (`CARD_ACTIONS` in conflict.resolved).
CARD_SCHEMA = 7
# Schema 8: a deferred card payment whose authorisation got no answer names that
# authorisation's key (`Payment.attempt`): the processor may have approved it.
ATTEMPT_SCHEMA = 8


_SKU_CHARS = string.ascii_letters + string.digits + "._-"


def check_sku(sku: str) -> None:
    """Raise ValueError unless `sku` matches SKU_PATTERN under `re.search`.

    Exactly that rule, so replicas of older builds accept the same events: `$` also
    matches before one final newline, so "A1\n" passes and "\n" or "A1\n\n" do not.
    `str.strip` removes every allowed character from both ends, so anything left over
    is a character the pattern refuses (min_length=1 is still checked by msgspec).
    """
    core = sku[:-1] if sku[-1:] == "\n" else sku
    if not core or core.strip(_SKU_CHARS):
        raise ValueError(f"sku {sku[:64]!r} does not match {SKU_PATTERN}")


# Bodies and their parts are gc=False (untracked by the cycle collector): frozen values
# of str/int/lists of such values cannot form cycles, and ingest makes several per event;
# tracked, they set off collections that were ~20% of decoding a sale.
class Body(Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    TYPE: ClassVar[str]

    def min_schema(self) -> int:
        """The lowest schema that has every field this body uses."""
        return 1

    def check(self) -> None:
        """Cross-field rules msgspec constraints cannot express."""


def by_schema(by: str) -> int:
    """The schema of a body whose only newer field is `by` (schema 3): 3 when it names
    someone, else 1, so an event made without one (the open demo, a build before 3) has
    the bytes and the schema it always had. The fold does not read `by`: who made an
    event is for the audit (`tillmesh log dump`), not state, so an older build that
    stores a schema-3 event unapplied is behind on what it can show, not on its digest."""
    return 3 if by else 1
