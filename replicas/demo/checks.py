"""The demo's proof: every replica's log file against the model and its store's others.

Read-only over the replicas' `log.db` files once the demo has stopped selling:
`verify` holds each replica's sales, stock and money against the `Model` of what the
API acknowledged (`model`) and checks that every till of a store and HQ's scope
of it fold to one digest; `count_conflicts` reports what conflict detection finds.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from broker.subjects import HQ
from conflict import lookups, queries
from conflict.catalog import PricePolicy
from conflict.detect import detect
from conflict.policies import from_state
from conflict.reports import Window, payments_report
from conflict.state import StoreState
from core.events import decode_body, decode_event
from core.fold import Accepted
from core.sqlite import open_sync
from replicas.demo.model import Model
from replicas.site import Site
from replicas.sync.protocol import holds

__all__ = ["Check", "card_money", "count_conflicts", "scoped_digest", "verify"]


@dataclass
class Check:
    subject: str  # a replica id, or a store for the digest check
    what: str  # "sales", "stock", "money", "digest" or "convergence"
    ok: bool
    detail: str

    @property
    def name(self) -> str:
        return f"{self.subject}: {_CHECK_NAMES.get(self.what, self.what)}"


_CHECK_NAMES = {
    "sales": "every acknowledged sale exactly once",
    "stock": "stock equals the model",
    "money": "money equals the model",
    "digest": "one digest on every till and in HQ's scope of the store",
    "prices": "each store's price: the chain's, or its own override",
    "cards": "card money online / deferred-captured / deferred-declined / expired equals the model",
}


@dataclass
class Facts:
    """What one replica's log file says, read-only."""

    digest: str
    sales: dict[str, int]  # sale id -> total
    stock: dict[tuple[str, str], int]  # (store, sku) -> on hand, zeros left out
    money: dict[str, int]
    cards: dict[str, int]  # card money by settlement (payments report), zeros left out


def _read_facts(db: Path) -> Facts:
    conn = open_sync(db, readonly=True)
    try:
        summary = queries.sales_summary(conn)
        return Facts(
            queries.state_digest(conn),
            lookups.sale_totals(conn),
            {
                (store, sku): n
                for store, levels in queries.stock_by_store(conn).items()
                for sku, n in levels.items()
                if n
            },
            {"gross": summary.gross, "voided": summary.voided, "refunded": summary.refunded},
            _card_money(conn),
        )
    finally:
        conn.close()


def _card_money(conn: sqlite3.Connection) -> dict[str, int]:
    out: Counter[str] = Counter()
    for row in payments_report(conn, Window()):
        if row["method"] == "card":
            out[row["settlement"]] += row["amount"]
    return {k: v for k, v in out.items() if v}


def card_money(data_dir: Path) -> dict[str, int]:
    """A replica's card money by settlement (online, captured, declined, expired,
    outstanding), from its log file, read-only."""
    conn = open_sync(data_dir / "log.db", readonly=True)
    try:
        return _card_money(conn)
    finally:
        conn.close()


def _card_check(rid: str, facts: Facts, want: dict[str, int]) -> Check:
    kinds = ("online", "captured", "declined", "expired", "outstanding")
    shown = ", ".join(f"{k} {facts.cards.get(k, 0)}" for k in kinds)
    return Check(rid, "cards", facts.cards == want, shown)


def scoped_digest(db: Path, replica_id: str, policy: PricePolicy) -> str:
    """The digest `replica_id` should have, computed from another (wider) log: fold the
    events in its scope into a scratch state. Fold order is free (the CRDT law)."""
    conn, scratch = open_sync(db, readonly=True), sqlite3.connect(":memory:", isolation_level=None)
    try:
        fold, scope = StoreState(price_policy=policy), holds(replica_id)
        fold.create_tables(scratch)
        scratch.execute("BEGIN")
        rows = conn.execute("SELECT origin, raw, flags FROM events ORDER BY hlc, origin, seq")
        while batch := rows.fetchmany(1000):
            events = [(decode_event(raw), flags) for origin, raw, flags in batch if scope(origin)]
            fold.apply(scratch, [Accepted(ev, decode_body(ev), fl) for ev, fl in events])
        scratch.execute("COMMIT")
        return queries.state_digest(scratch)
    finally:
        conn.close()
        scratch.close()


Expected = tuple[dict[str, int], dict[tuple[str, str], int], dict[str, int]]


def _expect(model: Model, stores: list[str]) -> Expected:
    """(sales, stock, money) the model says replicas holding `stores` must show; stock
    per (store, sku), as each store keeps its own (HQ too, for every store)."""
    sales = {s.id: s.total for s in model.sales.values() if s.till.split("/")[0] in stores}
    money: Counter[str] = Counter({"gross": 0, "voided": 0, "refunded": 0})
    stock: dict[tuple[str, str], int] = {}
    for store in stores:
        stock |= {(store, sku): n for sku, n in model.stock.get(store, Counter()).items() if n}
        money.update(model.money.get(store, Counter()))
    return sales, stock, dict(money)


def _compare(rid: str, facts: Facts, want: Expected) -> list[Check]:
    sales, stock, money = want
    missing, extra = sales.keys() - facts.sales.keys(), facts.sales.keys() - sales.keys()
    wrong = [k for k in stock.keys() | facts.stock.keys() if stock.get(k) != facts.stock.get(k)]
    return [
        Check(
            rid,
            "sales",
            not missing and not extra and all(facts.sales[k] == v for k, v in sales.items()),
            f"{len(facts.sales)} sales, {len(missing)} missing, {len(extra)} unknown",
        ),
        Check(
            rid,
            "stock",
            not wrong,
            f"{len(stock)} SKU levels" + (f"; differs on {sorted(wrong)[:3]}" if wrong else ""),
        ),
        Check(
            rid,
            "money",
            facts.money == {k: money[k] for k in facts.money},
            f"gross {facts.money['gross']}, voided {facts.money['voided']}, "
            f"refunded {facts.money['refunded']}",
        ),
    ]


def _check_prices(rid: str, db: Path, model: Model) -> Check:
    """The catalog as `rid`'s store sells it against the model: the chain price, or the
    store's override where it set one; HQ shows the chain price and every override."""
    store = None if rid == HQ else rid.split("/")[0]
    conn = open_sync(db, readonly=True)
    try:
        shown = {p["sku"]: p for p in queries.catalog(conn, store)}
    finally:
        conn.close()
    wrong = sorted(s for s in model.chain_prices
                   if s not in shown or shown[s]["price"] != model.price_at(store, s))  # fmt: skip
    overrides = {(st, sku): n for sku, p in shown.items() for st, n in p["overrides"].items()}
    if rid == HQ:
        wrong += sorted(s for s in model.chain_prices if shown.get(s, {}).get("chain_price")
                        != model.chain_prices[s])  # fmt: skip
        mine = model.overrides
    else:
        mine = {k: v for k, v in model.overrides.items() if k[0] == store}
    detail = f"{len(shown)} prices, {len(overrides)} store override(s)"
    if wrong or overrides != mine:
        detail += f"; differs on {wrong[:3]}, overrides {sorted(overrides.items())[:3]}"
    return Check(rid, "prices", not wrong and overrides == mine, detail)


def verify(root: Path, site: Site, model: Model, cards: Model | None = None) -> list[Check]:
    """Every replica's log file against the model and against its store's other replicas;
    with `cards` (a demo with an acquirer), card money by settlement too."""
    facts = {rid: _read_facts(site.data_dir(root, rid) / "log.db") for rid in site.replicas}
    checks = []
    for store, tills in site.stores.items():
        rids = [f"{store}/{t}" for t in tills]
        hq = scoped_digest(site.data_dir(root, HQ) / "log.db", rids[0], site.price_policy)
        digests = {facts[r].digest for r in rids}
        shown = " ".join(sorted(d[:12] for d in digests | {hq}))
        checks.append(Check(store, "digest", digests == {hq}, shown))
        for rid in rids:
            checks += _compare(rid, facts[rid], _expect(model, [store]))
            if cards is not None:
                checks.append(_card_check(rid, facts[rid], cards.card_settlements([store])))
    checks += _compare(HQ, facts[HQ], _expect(model, list(site.stores)))
    if model.chain_prices:
        checks += [_check_prices(rid, site.data_dir(root, rid) / "log.db", model)
                   for rid in site.replicas]  # fmt: skip
    if cards is not None:
        checks.append(_card_check(HQ, facts[HQ], cards.card_settlements(list(site.stores))))
    return checks


def count_conflicts(root: Path, site: Site) -> dict[str, Counter[str]]:
    """Conflicts `conflict.detect` finds in each replica's log, by kind."""
    out = {}
    for rid in site.replicas:
        conn = open_sync(site.data_dir(root, rid) / "log.db", readonly=True)
        try:
            out[rid] = Counter(c.kind for c in detect(conn, from_state(conn)))
        finally:
            conn.close()
    return out
