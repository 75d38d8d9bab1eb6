"""Builders for valid events and bodies, shared by the test suites."""

from __future__ import annotations

from core.events import (
    Body,
    Event,
    Payment,
    SaleCompleted,
    SaleLine,
    encode_body,
    event_hash,
)

__all__ = ["cash_sale", "chain"]


def cash_sale(
    sku: str = "SKU-1", qty: int = 1, price: int = 250, receipt: str = "R-1"
) -> SaleCompleted:
    return SaleCompleted(
        receipt=receipt,
        lines=[SaleLine(sku=sku, qty=qty, unit_price=price)],
        payments=[Payment(method="cash", amount=qty * price)],
    )


def chain(
    origin: str, bodies: list[Body], first_hlc: int = 1 << 16, prev: bytes = b"", first_seq: int = 1
) -> list[Event]:
    """Correctly chained events of one origin, as that origin's log would make them."""
    events = []
    for i, body in enumerate(bodies):
        event_type, data = encode_body(body)
        ev = Event(origin, first_seq + i, first_hlc + i, body.min_schema(), event_type, data, prev)
        prev = event_hash(ev)
        events.append(ev)
    return events
