"""The demo's shoppers, deliveries and head office, driven through the real till HTTP API.

Everything the API acknowledged is recorded in the `Model` (`model`): the demo's
independent idea of what the store should look like, which the replicas are later
checked against (`checks`). So the model only ever learns from 2xx answers: a
request that failed or never came back is not a fact.

Choices (basket size, SKUs, payment, refunds, voids) come from one `random.Random`
per till seeded from `--seed` and the till's id, so each till's sequence of actions
is the same on every run; only the interleaving between tills follows real timing.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from broker.subjects import HQ
from replicas.demo.access import ApiAccess
from replicas.demo.model import Model, SaleRecord, make_catalog

__all__ = ["TillDriver", "Workload"]

Note = Callable[[str], None]
DECLINE_SHARE = 0.08  # cards the acquirer declines (`acquirer.DECLINE_TOKENS`)
# HQ's floor limits for the demo: a bigger basket paid by card while the store is cut off
# is refused (the cashier takes cash), and every offline card is forwarded within the hour.
CARD_LIMITS = {"per_payment": 20_000, "till_total": 500_000, "till_count": 100, "max_age_s": 3600}


@dataclass
class TillDriver:
    """One till's cashier: its own RNG, price list, own sales and an on/off gate."""

    rid: str
    rng: random.Random
    prices: dict[str, int]
    history: list[str] = field(default_factory=list)  # own sale ids not yet settled
    online: bool = True  # can the card terminal reach the acquirer? (the poller's view)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    stale_prices: bool = False

    @property
    def store(self) -> str:
        return self.rid.split("/")[0]

    async def pause(self) -> None:
        """Stop selling here and wait for the request in flight: a till is only taken
        down between requests, so every answer the model holds was really given."""
        self.gate.clear()
        async with self.busy:
            pass

    def resume(self) -> None:
        self.gate.set()


class Workload:
    """Head office and cashiers; `run_tills` sells until `stop` is set."""

    def __init__(
        self, api: ApiAccess, tills: list[TillDriver], seed: int, note: Note, rate: float = 4.0
    ) -> None:
        self.api, self.tills, self.note = api, tills, note
        self.rng = random.Random(f"{seed}/hq")
        self.rate = rate  # baskets per second per till, on average
        self.model = Model()
        self.catalog: dict[str, dict[str, Any]] = {}
        self.recent: deque[str] = deque(maxlen=50)

    async def _post(
        self, method: str, rid: str, path: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """JSON of `rid`'s 2xx answer, else None (the action simply did not happen)."""
        try:
            r = await self.api.client(rid).request(method, self.api.url(rid, path), json=body)
        except httpx.HTTPError:
            return None
        if r.is_success:
            out: dict[str, Any] = r.json()
            return out
        self.model.counts[f"refused_{r.status_code}"] += 1
        return None

    # --- head office ------------------------------------------------------------------

    async def publish_catalog(self, n: int) -> None:
        self.catalog = make_catalog(self.rng, n)
        sem = asyncio.Semaphore(32)  # concurrent appends share group commits

        async def put(sku: str, product: dict[str, Any]) -> None:
            async with sem:
                out = await self._post("PUT", HQ, f"/catalog/{sku}", product)
            if out is None:
                raise RuntimeError(f"HQ refused product {sku}")
            self.model.ack(out["event_id"])

        await asyncio.gather(*(put(s, p) for s, p in self.catalog.items()))
        self.model.counts["products"] = n
        self.model.chain_prices = {s: p["price"] for s, p in self.catalog.items()}
        for till in self.tills:
            till.prices = {s: p["price"] for s, p in self.catalog.items()}

    async def change_prices(self, k: int) -> list[str]:
        """HQ reprices `k` SKUs; tills pick the new prices up as they replicate."""
        skus = self.rng.sample(sorted(self.catalog), k)
        for sku in skus:
            old = self.catalog[sku]["price"]
            new = max(19, old + self.rng.choice((-1, 1)) * old * self.rng.randint(5, 20) // 100)
            out = await self._post("PUT", HQ, f"/catalog/{sku}/price", {"price": new})
            if out is not None:
                self.catalog[sku]["price"] = new
                self.model.chain_prices[sku] = new
                self.model.ack(out["event_id"])
                self.model.counts["price_changes"] += 1
        for till in self.tills:
            till.stale_prices = True
        return skus

    async def store_override(self, rid: str) -> tuple[str, int] | None:
        """A store manager at till `rid` marks one SKU down 10% for their store only:
        the store's override, which its tills sell at and no other store sees."""
        sku = self.rng.choice(sorted(self.catalog))
        price = max(1, self.catalog[sku]["price"] * 90 // 100)
        out = await self._post("PUT", rid, f"/catalog/{sku}/price", {"price": price})
        if out is None:
            return None
        store = rid.split("/")[0]
        self.model.overrides[(store, sku)] = price
        self.model.ack(out["event_id"])
        self.model.counts["store_overrides"] += 1
        for till in self.tills:
            if till.store == store:
                till.stale_prices = True
        return sku, price

    async def set_card_limits(self) -> None:
        """HQ's floor limits for cards taken offline, for every store (they replicate)."""
        out = await self._post("PUT", HQ, "/cards/limits", CARD_LIMITS)
        if out is None:
            raise RuntimeError("HQ refused the card floor limits")
        self.model.ack(out["event_id"])

    async def initial_deliveries(self) -> None:
        """Each store receives every SKU once, at one of its tills (the back door)."""
        sem = asyncio.Semaphore(24)

        async def deliver(till: TillDriver, sku: str) -> None:
            async with sem:
                await self.receive(till, sku, self.rng.randrange(40, 120), quiet=True)

        jobs = []
        for store in sorted({t.store for t in self.tills}):
            local = [t for t in self.tills if t.store == store]
            jobs += [deliver(self.rng.choice(local), sku) for sku in self.catalog]
        await asyncio.gather(*jobs)

    # --- cashier actions --------------------------------------------------------------

    async def receive(self, till: TillDriver, sku: str, qty: int, quiet: bool = False) -> None:
        body = {"qty": qty, "reference": f"delivery-{till.rng.randrange(10**6):06d}"}
        out = await self._post("POST", till.rid, f"/stock/{sku}/receive", body)
        if out is None:
            return
        self.model.ack(out["event_id"])
        self.model.move(till.store, sku, qty)
        self.model.counts["deliveries"] += 1
        if not quiet:
            self.note(f"{till.rid}  delivery  {qty} x {sku}")

    def _basket(self, till: TillDriver) -> tuple[dict[str, Any], int]:
        rng = till.rng
        lines, total = [], 0
        for sku in rng.sample(sorted(self.catalog), rng.randint(1, 10)):
            qty = rng.choice((1, 1, 1, 2, 2, 3, 4, 6))
            discount = qty * till.prices[sku] // 10 if rng.random() < 0.08 else 0
            lines.append({"sku": sku, "qty": qty, "discount": discount})
            total += qty * till.prices[sku] - discount
        pay = self._cash(till, total) if till.rng.random() < 0.4 else self._card(till, total)
        return {"lines": lines, "payments": [pay]}, total

    def _cash(self, till: TillDriver, total: int) -> dict[str, Any]:
        step = till.rng.choice((1, 500, 1000, 2000))  # often a round note, change given back
        return {"method": "cash", "amount": -(-total // step) * step}

    def _card(self, till: TillDriver, total: int) -> dict[str, Any]:
        rng = till.rng
        # The till decides online or deferred (the processor answers, or cannot be
        # reached); a share of cards are ones the acquirer declines.
        head = "tok_x" if rng.random() < DECLINE_SHARE else "tok_c"
        return {
            "method": "card",
            "amount": total,
            "card_token": head + "".join(rng.choices(string.ascii_lowercase, k=16)),
            "card_last4": f"{rng.randrange(10_000):04d}",
        }

    async def _sale(self, till: TillDriver, basket: dict[str, Any], total: int) -> Any:
        """The sale's answer; a card declined online (402) or over the offline floor
        limits (409) is paid in cash instead, as the cashier would ask."""
        try:
            r = await self.api.client(till.rid).post(self.api.url(till.rid, "/sales"), json=basket)
        except httpx.HTTPError:
            return None
        card = basket["payments"][0]["method"] == "card"
        if card and (r.status_code == 402 or (r.status_code == 409 and "offline" in r.text)):
            self.model.counts[f"card_refused_{r.status_code}"] += 1
            basket["payments"] = [self._cash(till, total)]
            return await self._post("POST", till.rid, "/sales", basket)
        if r.is_success:
            return r.json()
        self.model.counts[f"refused_{r.status_code}"] += 1
        return None

    async def sell(self, till: TillDriver) -> None:
        basket, total = self._basket(till)
        out = await self._sale(till, basket, total)
        if out is None:  # most likely a price that changed under us: rescan and retry
            await self._refresh_prices(till)
            basket, total = self._basket(till)
            out = await self._sale(till, basket, total)
            if out is None:
                return
        lines = [(ln["sku"], ln["qty"]) for ln in basket["lines"]]
        self._record_sale(till, out, lines, basket["payments"][0])

    def _record_sale(
        self,
        till: TillDriver,
        out: dict[str, Any],
        lines: list[tuple[str, int]],
        payment: dict[str, Any],
    ) -> None:
        m = self.model
        m.ack(out["sale_id"])
        auth = out["payments"][0]["auth"] or ""  # the till's decision, as it answered
        m.sales[out["sale_id"]] = SaleRecord(
            out["sale_id"], till.rid, lines, out["total"], payment["method"], card=auth,
            declines=payment.get("card_token", "").startswith("tok_x"),
        )  # fmt: skip
        for sku, qty in lines:
            m.move(till.store, sku, -qty)
        m.add_money(till.store, "gross", out["total"])
        kind = payment["method"] if payment["method"] == "cash" else f"card_{auth}"
        m.counts["sales"] += 1
        m.counts[kind] += 1
        till.history.append(out["sale_id"])
        if kind == "card_deferred" or m.counts["sales"] % 10 == 0:  # a sample, readable
            self.note(
                f"{till.rid}  sale {out['receipt']}  {len(lines)} lines  "
                f"{out['total'] / 100:.2f}  {kind.replace('_', ' ')}"
            )

    async def _refresh_prices(self, till: TillDriver) -> None:
        try:
            r = await self.api.client(till.rid).get(self.api.url(till.rid, "/catalog"))
        except httpx.HTTPError:
            return
        if r.is_success:
            till.prices.update({p["sku"]: p["price"] for p in r.json()})
            till.stale_prices = False

    async def refund(self, till: TillDriver) -> None:
        if not till.history:
            return
        sale = self.model.sales[till.history.pop(till.rng.randrange(len(till.history)))]
        line = till.rng.randrange(len(sale.lines))
        qty = till.rng.randint(1, sale.lines[line][1])
        restock = till.rng.random() < 0.8  # the rest were damaged: not back on the shelf
        # The cashier picks the refund method on screen, as tills do (sent explicitly).
        body = {
            "lines": [{"line": line, "qty": qty}],
            "method": sale.method,
            "restock": restock,
            "reason": "customer",
        }
        out = await self._post("POST", till.rid, f"/sales/{sale.id}/refunds", body)
        if out is None:
            return
        sale.settled = True
        self.model.ack(out["refund_id"])
        if restock:
            self.model.move(till.store, sale.lines[line][0], qty)
        self.model.add_money(till.store, "refunded", out["amount"])
        self.model.counts["refunds"] += 1
        self.note(
            f"{till.rid}  refund {qty} x {sale.lines[line][0]} of {sale.id}"
            f"{'' if restock else ' (not restocked)'}"
        )

    async def void(self, till: TillDriver) -> None:
        if not till.history:
            return
        sale = self.model.sales[till.history.pop()]  # the customer changed their mind
        body = {"reason": "mistake"}
        out = await self._post("POST", till.rid, f"/sales/{sale.id}/void", body)
        if out is None:
            return
        sale.settled = sale.voided = True
        self.model.ack(out["event_id"])
        for sku, qty in sale.lines:
            self.model.move(till.store, sku, qty)
        self.model.add_money(till.store, "voided", sale.total)
        self.model.counts["voids"] += 1
        self.note(f"{till.rid}  void {sale.id}  ({sale.total / 100:.2f})")

    async def _act(self, till: TillDriver) -> None:
        if till.stale_prices:
            await self._refresh_prices(till)
        roll = till.rng.random()
        if roll < 0.04:
            await self.refund(till)
        elif roll < 0.06:
            await self.void(till)
        elif roll < 0.10:
            sku = till.rng.choice(sorted(self.catalog))
            await self.receive(till, sku, till.rng.randrange(6, 48))
        else:
            await self.sell(till)

    async def run_till(self, till: TillDriver, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await till.gate.wait()
            async with till.busy:
                if till.gate.is_set() and not stop.is_set():
                    await self._act(till)
            await asyncio.sleep(till.rng.expovariate(self.rate))

    async def run_tills(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self.run_till(t, stop) for t in self.tills))
