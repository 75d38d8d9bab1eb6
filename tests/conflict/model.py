"""Plain sequential reference models the SQL fold must agree with.

Written independently of tillmesh.conflict.state: stock replays moves and counts sorted by
time (the obvious "what would a single till have computed" model); catalog and stock are
also built from the `crdt` spec types; sales are sums over the event set.
"""

from __future__ import annotations

from collections.abc import Sequence

from tillmesh.conflict.crdt import LWWRegister, ResetCounter
from tillmesh.core.events import (
    HQ,
    Event,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    SaleCompleted,
    SaleVoided,
    StockAdjusted,
    StockCounted,
    StockReceived,
)
from tillmesh.core.fold import Accepted

__all__ = ["model_catalog", "model_sales", "model_stock", "model_stock_crdt", "moves"]

Move = tuple[int, str, str, int, int]  # (hlc, sku, id, line, delta)


def _key(ev: Event) -> tuple[int, str, int]:
    return (ev.hlc, ev.origin, ev.seq)


def _sales(events: Sequence[Accepted]) -> dict[str, tuple[Event, SaleCompleted]]:
    return {a.event.id: (a.event, a.body) for a in events if isinstance(a.body, SaleCompleted)}


def _earliest_voids(events: Sequence[Accepted]) -> dict[str, Event]:
    first: dict[str, Event] = {}
    for a in events:
        if isinstance(a.body, SaleVoided):
            cur = first.get(a.body.sale)
            if cur is None or _key(a.event) < _key(cur):
                first[a.body.sale] = a.event
    return first


def moves(events: Sequence[Accepted]) -> list[Move]:
    """Every stock move the event set implies."""
    sales, out = _sales(events), []
    for a in events:
        ev, b = a.event, a.body
        if isinstance(b, SaleCompleted):
            out += [(ev.hlc, ln.sku, ev.id, i, -ln.qty) for i, ln in enumerate(b.lines)]
        elif isinstance(b, StockReceived | StockAdjusted):
            delta = b.qty if isinstance(b, StockReceived) else b.delta
            out.append((ev.hlc, b.sku, ev.id, 0, delta))
        elif isinstance(b, RefundIssued) and b.restock and b.sale in sales:
            sold = sales[b.sale][1].lines
            out += [(ev.hlc, sold[r.line].sku, ev.id, i, r.qty)
                    for i, r in enumerate(b.lines) if r.line < len(sold)]  # fmt: skip
    for sale_id, void in _earliest_voids(events).items():
        if sale_id in sales:
            lines = sales[sale_id][1].lines
            out += [(void.hlc, ln.sku, void.id, i, ln.qty) for i, ln in enumerate(lines)]
    return out


def model_stock(events: Sequence[Accepted]) -> dict[str, int]:
    """Replay in time order; at equal HLC the moves go first, so a count at HLC h has seen
    every move at h, and the last count by (hlc, origin, seq) wins."""
    timeline: list[tuple[int, int, str, int, str, int]] = [
        (hlc, 0, mid, line, sku, delta) for hlc, sku, mid, line, delta in moves(events)
    ]
    for a in events:
        if isinstance(a.body, StockCounted):
            ev = a.event
            timeline.append((ev.hlc, 1, ev.origin, ev.seq, a.body.sku, a.body.count))
    level: dict[str, int] = {}
    for _, is_count, _, _, sku, n in sorted(timeline):
        level[sku] = n if is_count else level.get(sku, 0) + n
    return level


def model_stock_crdt(events: Sequence[Accepted]) -> dict[str, int]:
    """The same, built from `crdt.ResetCounter` replicas merged together."""
    counters: dict[str, ResetCounter] = {}
    for hlc, sku, mid, line, delta in moves(events):
        counters[sku] = counters.get(sku, ResetCounter()).move(hlc, f"{mid}#{line}", delta)
    for a in events:
        if isinstance(a.body, StockCounted):
            ev, sku = a.event, a.body.sku
            counters[sku] = counters.get(sku, ResetCounter()).count(
                ev.hlc, ev.origin, ev.seq, a.body.count
            )
    return {sku: c.value for sku, c in counters.items()}


ProductValue = tuple[str, int, int]  # (name, tax_rate_bp, active)


def _registers(
    events: Sequence[Accepted],
) -> tuple[dict[str, LWWRegister[ProductValue]], dict[str, LWWRegister[int]]]:
    products: dict[str, LWWRegister[ProductValue]] = {}
    prices: dict[str, LWWRegister[int]] = {}
    for a in events:
        ev, b = a.event, a.body
        if isinstance(b, ProductUpserted | PriceSet):
            reg = prices.get(b.sku, LWWRegister[int]())
            prices[b.sku] = reg.write(ev.hlc, ev.origin, ev.seq, b.price)
        if isinstance(b, ProductUpserted):
            value = (b.name, b.tax_rate_bp, int(b.active))
            preg = products.get(b.sku, LWWRegister[ProductValue]())
            products[b.sku] = preg.write(ev.hlc, ev.origin, ev.seq, value)
    return products, prices


def _price(reg: LWWRegister[int], policy: str, window_ms: int) -> int | None:
    if policy == "hq_wins":
        hq = [w for w in reg.cells if w.origin == HQ]
        return hq[0].value if hq else reg.value
    if policy == "lowest":
        conc = sorted(reg.concurrent(window_ms), key=lambda w: w.key, reverse=True)
        return min(conc, key=lambda w: w.value).value
    return reg.value


def model_catalog(
    events: Sequence[Accepted], policy: str, window_ms: int
) -> dict[str, tuple[str, int, int, int]]:
    """sku -> (name, price, tax_rate_bp, active) from LWW registers and the policy."""
    products, prices = _registers(events)
    out = {}
    for sku, reg in products.items():
        name, tax, active = reg.value or ("", 0, 0)
        price = _price(prices[sku], policy, window_ms)
        assert price is not None
        out[sku] = (name, price, tax, active)
    return out


def model_sales(events: Sequence[Accepted]) -> tuple[int, int, int, int, int]:
    """(count, gross, voided, refunded, net) by plain sums over the set."""
    sales = _sales(events)
    voided = {s for s in _earliest_voids(events) if s in sales}
    gross = sum(b.total for _, b in sales.values())
    void_total = sum(sales[s][1].total for s in voided)
    refunded = sum(
        a.body.amount for a in events
        if isinstance(a.body, RefundIssued) and a.body.sale in sales and a.body.sale not in voided
    )  # fmt: skip
    return (len(sales), gross, void_total, refunded, gross - void_total - refunded)
