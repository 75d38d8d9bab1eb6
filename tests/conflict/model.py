"""Plain sequential reference models the SQL fold must agree with.

Written independently of conflict.state: stock replays moves and counts sorted by
time (the obvious "what would a single till have computed" model); catalog and stock are
also built from the `crdt` spec types; sales are sums over the event set.

Stock is per (store, sku): a move or count belongs to the store of the event making it
(the part of its origin before "/": "s1/t2" -> "s1", "hq" -> "hq"), except a void's
restock, which goes back to the store of the sale it cancels.
"""

from __future__ import annotations

from collections.abc import Sequence

from conflict.crdt import LWWRegister, ResetCounter
from core.events import (
    HQ,
    ConflictResolved,
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
from core.fold import Accepted

__all__ = [
    "StockKey",
    "effective_resolutions",
    "model_catalog",
    "model_sales",
    "model_stock",
    "model_stock_crdt",
    "moves",
    "store",
]

StockKey = tuple[str, str]  # (store, sku)
Move = tuple[int, StockKey, str, int, int]  # (hlc, (store, sku), id, line, delta)


def store(origin: str) -> str:
    return origin.split("/")[0]


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


def effective_resolutions(events: Sequence[Accepted]) -> dict[str, Accepted]:
    """conflict id -> its one effective resolution: the earliest by (hlc, origin, seq)."""
    first: dict[str, Accepted] = {}
    for a in events:
        if isinstance(a.body, ConflictResolved):
            cur = first.get(a.body.conflict)
            if cur is None or _key(a.event) < _key(cur.event):
                first[a.body.conflict] = a
    return first


def _resolution_moves(events: Sequence[Accepted]) -> list[Move]:
    """The compensations of the effective resolutions only, in their author's store."""
    return [
        (a.event.hlc, (store(a.event.origin), m.sku), a.event.id, i, m.delta)
        for a in effective_resolutions(events).values()
        for i, m in enumerate(a.body.moves)  # type: ignore[attr-defined]
    ]


def moves(events: Sequence[Accepted]) -> list[Move]:
    """Every stock move the event set implies, in the store of the event making it."""
    sales, out = _sales(events), _resolution_moves(events)
    for a in events:
        ev, b = a.event, a.body
        here = store(ev.origin)
        if isinstance(b, SaleCompleted):
            out += [(ev.hlc, (here, ln.sku), ev.id, i, -ln.qty) for i, ln in enumerate(b.lines)]
        elif isinstance(b, StockReceived | StockAdjusted):
            delta = b.qty if isinstance(b, StockReceived) else b.delta
            out.append((ev.hlc, (here, b.sku), ev.id, 0, delta))
        elif isinstance(b, RefundIssued) and b.restock and b.sale in sales:
            sold = sales[b.sale][1].lines
            out += [(ev.hlc, (here, sold[r.line].sku), ev.id, i, r.qty)
                    for i, r in enumerate(b.lines) if r.line < len(sold)]  # fmt: skip
    for sale_id, void in _earliest_voids(events).items():
        if sale_id in sales:
            lines = sales[sale_id][1].lines
            at = store(sales[sale_id][0].origin)
            out += [(void.hlc, (at, ln.sku), void.id, i, ln.qty) for i, ln in enumerate(lines)]
    return out


def _counts(events: Sequence[Accepted]) -> list[tuple[Event, StockKey, int]]:
    recounts = [
        (a.event, (store(a.event.origin), a.body.sku), a.body.count)
        for a in effective_resolutions(events).values()
        if isinstance(a.body, ConflictResolved) and a.body.count is not None and a.body.sku
    ]
    return recounts + [
        (a.event, (store(a.event.origin), a.body.sku), a.body.count)
        for a in events
        if isinstance(a.body, StockCounted)
    ]


def model_stock(events: Sequence[Accepted]) -> dict[StockKey, int]:
    """Replay in time order; at equal HLC the moves go first, so a count at HLC h has seen
    every move at h, and the last count by (hlc, origin, seq) wins."""
    timeline: list[tuple[int, int, str, int, StockKey, int]] = [
        (hlc, 0, mid, line, key, delta) for hlc, key, mid, line, delta in moves(events)
    ]
    timeline += [(ev.hlc, 1, ev.origin, ev.seq, key, n) for ev, key, n in _counts(events)]
    level: dict[StockKey, int] = {}
    for _, is_count, _, _, key, n in sorted(timeline):
        level[key] = n if is_count else level.get(key, 0) + n
    return level


def model_stock_crdt(events: Sequence[Accepted]) -> dict[StockKey, int]:
    """The same, built from `crdt.ResetCounter` replicas merged together."""
    counters: dict[StockKey, ResetCounter] = {}
    for hlc, key, mid, line, delta in moves(events):
        counters[key] = counters.get(key, ResetCounter()).move(hlc, f"{mid}#{line}", delta)
    for ev, key, n in _counts(events):
        counters[key] = counters.get(key, ResetCounter()).count(ev.hlc, ev.origin, ev.seq, n)
    return {key: c.value for key, c in counters.items()}


ProductValue = tuple[str, int, int]  # (name, tax_rate_bp, active)


def _registers(
    events: Sequence[Accepted], store_of_price: str | None
) -> tuple[dict[str, LWWRegister[ProductValue]], dict[str, LWWRegister[int]]]:
    """Products, and the price writes that compete for `store_of_price`'s price: the
    chain's (products, HQ's prices) and that store's own (None: the chain's only)."""
    products: dict[str, LWWRegister[ProductValue]] = {}
    prices: dict[str, LWWRegister[int]] = {}
    for a in events:
        ev, b = a.event, a.body
        theirs = isinstance(b, PriceSet) and ev.origin != HQ
        if theirs and store(ev.origin) != store_of_price:
            continue  # another store's override
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
        hq = [w for w in reg.concurrent(window_ms) if w.origin == HQ]
        return hq[0].value if hq else reg.value
    if policy == "lowest":
        conc = sorted(reg.concurrent(window_ms), key=lambda w: w.key, reverse=True)
        return min(conc, key=lambda w: w.value).value
    return reg.value


def model_catalog(
    events: Sequence[Accepted], policy: str, window_ms: int, at_store: str | None = None
) -> dict[str, tuple[str, int, int, int]]:
    """sku -> (name, price, tax_rate_bp, active) from LWW registers and the policy, as
    `at_store` sells (None: the chain's catalog, HQ's view)."""
    products, prices = _registers(events, at_store)
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
