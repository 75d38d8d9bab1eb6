"""Tax at the till: each line's tax from the catalog's rate at the moment of sale.

Money is integer minor units and rates are basis points (2000 = 20 %). The site says
whether its prices include tax (`inclusive`, e.g. EU shelves) or exclude it
(`exclusive`, e.g. US shelves); the sale event records which, with each line's rate and
tax, so a report never recomputes what the till charged. Rounding is per line, half up:

    inclusive:  tax = round(value * rate / (10000 + rate))   the price holds it
    exclusive:  tax = round(value * rate / 10000)            added to the line's total

where a line's value is qty * unit_price - discount. A refund gives back the tax in
proportion to the money it returns, telescoped over the line's refunds so that refunding
a line in parts gives back exactly its tax:

    given back so far = round(line tax * refunded so far / line total)

>>> line_tax(1000, 2000, "inclusive"), line_tax(1000, 2000, "exclusive")
(167, 200)
>>> refund_tax(167, 1000, done=0, amount=500) + refund_tax(167, 1000, done=500, amount=500)
167
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import msgspec

from core.events import SaleCompleted

__all__ = ["Refunded", "TaxMode", "line_tax", "refund_tax", "share", "taxed"]

TaxMode = Literal["inclusive", "exclusive"]
_BP = 10_000


def share(whole: int, part: int, of: int) -> int:
    """round(whole * part / of), halves up, in integers (no float ever sees money)."""
    return (2 * whole * part + of) // (2 * of) if of else 0


def line_tax(value: int, rate_bp: int, mode: TaxMode) -> int:
    """The tax in (inclusive) or on (exclusive) a line worth `value`."""
    return share(value, rate_bp, _BP + rate_bp if mode == "inclusive" else _BP)


def taxed(sale: SaleCompleted, rates: Mapping[str, int], mode: TaxMode) -> SaleCompleted:
    """`sale` with each line's tax at its SKU's rate (0 for a SKU `rates` lacks: one the
    catalog does not have, sold at a price given by hand)."""
    lines = []
    for line in sale.lines:
        rate = rates.get(line.sku, 0)
        tax = line_tax(line.total, rate, mode)
        lines.append(msgspec.structs.replace(line, tax=tax, tax_rate_bp=rate))
    return msgspec.structs.replace(sale, lines=lines, tax_mode=mode)


class Refunded(NamedTuple):
    """What one refund line gives back: `amount`, `tax` of it."""

    amount: int
    tax: int


def refund_tax(line_tax: int, line_total: int, done: int, amount: int) -> int:
    """The tax in a refund of `amount` from a line that paid `line_total` with
    `line_tax` in it, `done` of it refunded before."""
    return share(line_tax, done + amount, line_total) - share(line_tax, done, line_total)
