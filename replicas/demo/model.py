"""The demo's independent picture of the store: the catalog it sells and the model.

`make_catalog` invents the products HQ defines. `Model` is what the till API
acknowledged (stock per store and SKU, every sale once, money totals); the workload
(`workload`) writes it, the checks (`checks`) hold the replicas' files
against it. It must only ever learn from 2xx answers: a request that failed or never
came back is not a fact.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Model", "SaleRecord", "make_catalog"]


_ITEMS = (
    "Cola",
    "Lemonade",
    "Sparkling water",
    "Orange juice",
    "Coffee beans",
    "Green tea",
    "Bread",
    "Croissant",
    "Bagel",
    "Butter",
    "Milk",
    "Yoghurt",
    "Cheddar",
    "Eggs",
    "Apples",
    "Bananas",
    "Tomatoes",
    "Pasta",
    "Rice",
    "Olive oil",
    "Crisps",
    "Chocolate",
    "Biscuits",
    "Soap",
    "Shampoo",
    "Toothpaste",
    "Batteries",
    "Light bulb",
    "Notebook",
    "Pen",
    "Tea towel",
    "Candles",
)
_SIZES = ("small", "medium", "large", "250g", "500g", "1kg", "33cl", "1l", "x4", "x12")


def make_catalog(rng: random.Random, n: int) -> dict[str, dict[str, Any]]:
    """`n` products as HQ would define them: SKU -> {name, price, tax_rate_bp}."""
    return {
        f"SKU-{i:04d}": {
            "name": f"{rng.choice(_ITEMS)} {rng.choice(_SIZES)}",
            "price": rng.randrange(49, 2999),
            "tax_rate_bp": rng.choice((0, 550, 2000)),
        }
        for i in range(1, n + 1)
    }


@dataclass
class SaleRecord:
    id: str
    till: str
    lines: list[tuple[str, int]]  # (sku, qty) in line order
    total: int
    method: str  # how it was paid: refunds go back the same way
    settled: bool = False  # voided or refunded: the demo touches a sale at most once
    card: str = ""  # a card's authorisation as the till answered: online or deferred
    declines: bool = False  # a card the acquirer declines (its token says so)
    voided: bool = False


@dataclass
class Model:
    """What the API acknowledged, per store (tills of a store share one stock)."""

    stock: dict[str, Counter[str]] = field(default_factory=dict)
    sales: dict[str, SaleRecord] = field(default_factory=dict)
    heads: dict[str, int] = field(default_factory=dict)  # origin -> highest acked seq
    money: dict[str, Counter[str]] = field(default_factory=dict)  # store -> gross/voided/...
    counts: Counter[str] = field(default_factory=Counter)
    chain_prices: dict[str, int] = field(default_factory=dict)  # sku -> HQ's price
    overrides: dict[tuple[str, str], int] = field(default_factory=dict)  # (store, sku) -> price

    def price_at(self, store: str | None, sku: str) -> int:
        """What `store` sells `sku` at: its override, else the chain price (None: HQ's)."""
        return self.overrides.get((store or "", sku), self.chain_prices[sku])

    def ack(self, event_id: str) -> None:
        origin, _, seq = event_id.rpartition(":")
        self.heads[origin] = max(self.heads.get(origin, 0), int(seq))

    def move(self, store: str, sku: str, delta: int) -> None:
        self.stock.setdefault(store, Counter())[sku] += delta

    def add_money(self, store: str, key: str, amount: int) -> None:
        self.money.setdefault(store, Counter())[key] += amount

    def card_settlements(self, stores: list[str]) -> dict[str, int]:
        """Card money of the non-voided sales of `stores`, by how it settles: online, or
        deferred and then captured or declined (the demo's offline cards are forwarded
        long before they could expire)."""
        out: Counter[str] = Counter()
        for s in self.sales.values():
            if s.card and not s.voided and s.till.split("/")[0] in stores:
                kind = (
                    "online" if s.card == "online" else ("declined" if s.declines else "captured")
                )
                out[kind] += s.total
        return dict(out)

    def card_charged(self) -> int:
        """What the processor should have charged: every card sale the tills acknowledged
        that was approved online or captured later (a void or refund at the till gives
        no money back at the processor: the demo has no refund call)."""
        settled = [s for s in self.sales.values() if s.card]
        return sum(s.total for s in settled if s.card == "online" or not s.declines)

    def store_heads(self, store: str) -> dict[str, int]:
        """Acked heads of the origins a till of `store` holds (its store's and HQ's)."""
        return {o: s for o, s in self.heads.items() if o == "hq" or o.startswith(f"{store}/")}
