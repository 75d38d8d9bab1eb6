"""The demo's proof: every replica's log file against the model and its store's others.

Read-only over the replicas' `log.db` files (and HQ's PostgreSQL database when HQ runs
on one: `hq_dsn`) once the demo has stopped selling:
`verify` holds each replica's sales, stock and money against the `Model` of what the
API acknowledged (`model`) and checks that every till of a store and HQ's scope
of it fold to one digest; `count_conflicts` reports what conflict detection finds.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
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
from replicas.hq import facts as pg_facts
from replicas.site import Site
from replicas.sync.protocol import holds

__all__ = ["Check", "card_money", "count_conflicts", "scoped_digest", "scoped_digest_of", "verify"]


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
    "charged": "the processor charged each approved card once, and nothing for a sale not stored",
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


def card_money(data_dir: Path, hq_dsn: str | None = None) -> dict[str, int]:
    """A replica's card money by settlement (online, captured, declined, expired,
    outstanding), from its log file (HQ's PostgreSQL database given `hq_dsn`), read-only."""
    if hq_dsn is not None:
        return pg_facts.card_money(hq_dsn)
    conn = open_sync(data_dir / "log.db", readonly=True)
    try:
        return _card_money(conn)
    finally:
        conn.close()


def processor_check(acquirer_db: Path, model: Model) -> Check:
    """The processor's own ledger against the model: each charge once (a capture that
    names an authorisation approved earlier shares its reference), nothing charged for
    a sale the tills did not store (reversed), nothing missing."""
    conn = sqlite3.connect(f"file:{acquirer_db}?mode=ro", uri=True)
    try:
        charges = dict(
            conn.execute(
                "SELECT reference, amount FROM records WHERE status = 'approved'"
                " AND reversed = 0 AND kind IN ('authorise', 'capture')"
            ).fetchall()
        )
        reversed_ = conn.execute("SELECT count(*) FROM records WHERE reversed = 1").fetchone()[0]
    finally:
        conn.close()
    charged, want = sum(charges.values()), model.card_charged()
    shown = f"charged {charged} in {len(charges)} charges, the model {want}; {reversed_} reversed"
    return Check("acquirer", "charged", charged == want, shown)


def _card_check(rid: str, facts: Facts, want: dict[str, int]) -> Check:
    kinds = ("online", "captured", "declined", "expired", "outstanding")
    shown = ", ".join(f"{k} {facts.cards.get(k, 0)}" for k in kinds)
    return Check(rid, "cards", facts.cards == want, shown)


Rows = list[tuple[str, bytes, int]]  # (origin, raw, flags) of stored events


def _log_batches(db: Path) -> Iterator[Rows]:
    conn = open_sync(db, readonly=True)
    try:
        rows = conn.execute("SELECT origin, raw, flags FROM events ORDER BY hlc, origin, seq")
        while batch := rows.fetchmany(1000):
            yield batch
    finally:
        conn.close()


def _hq_batches(root: Path, site: Site, hq_dsn: str | None) -> Iterator[Rows]:
    if hq_dsn is not None:
        return pg_facts.event_batches(hq_dsn)
    return _log_batches(site.data_dir(root, HQ) / "log.db")


def _scratch(batches: Iterable[Rows], replica_id: str, policy: PricePolicy) -> sqlite3.Connection:
    """The state `replica_id` should have, folded from a wider set of events into a
    scratch database. Fold order is free (the CRDT law)."""
    scratch = sqlite3.connect(":memory:", isolation_level=None)
    fold, scope = StoreState(price_policy=policy), holds(replica_id)
    fold.create_tables(scratch)
    scratch.execute("BEGIN")
    for batch in batches:
        events = [(decode_event(raw), flags) for origin, raw, flags in batch if scope(origin)]
        fold.apply(scratch, [Accepted(ev, decode_body(ev), fl) for ev, fl in events])
    scratch.execute("COMMIT")
    return scratch


def scoped_digest(db: Path, replica_id: str, policy: PricePolicy) -> str:
    """The digest `replica_id` should have, computed from another (wider) log."""
    return scoped_digest_of(_log_batches(db), replica_id, policy)


def scoped_digest_of(batches: Iterable[Rows], replica_id: str, policy: PricePolicy) -> str:
    scratch = _scratch(batches, replica_id, policy)
    try:
        return queries.state_digest(scratch)
    finally:
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


def _check_prices(rid: str, conn: sqlite3.Connection, model: Model) -> Check:
    """The catalog as `rid`'s store sells it against the model: the chain price, or the
    store's override where it set one; HQ shows the chain price and every override."""
    store = None if rid == HQ else rid.split("/")[0]
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


def _pg_facts(dsn: str) -> Facts:
    sales, stock, money = pg_facts.facts(dsn)
    return Facts("", sales, stock, money, pg_facts.card_money(dsn))


def verify(
    root: Path, site: Site, model: Model, hq_dsn: str | None = None, cards: Model | None = None
) -> list[Check]:
    """Every replica's log file (HQ's database) against the model and against its
    store's other replicas; with `cards` (a demo with an acquirer), card money by
    settlement too."""
    tills = [r for r in site.replicas if r != HQ]
    facts = {rid: _read_facts(site.data_dir(root, rid) / "log.db") for rid in tills}
    hq_db = site.data_dir(root, HQ) / "log.db"
    facts[HQ] = _pg_facts(hq_dsn) if hq_dsn is not None else _read_facts(hq_db)
    checks = []
    for store, tills in site.stores.items():
        rids = [f"{store}/{t}" for t in tills]
        batches = _hq_batches(root, site, hq_dsn)
        hq = scoped_digest_of(batches, rids[0], site.price_policy)
        digests = {facts[r].digest for r in rids}
        shown = " ".join(sorted(d[:12] for d in digests | {hq}))
        checks.append(Check(store, "digest", digests == {hq}, shown))
        for rid in rids:
            checks += _compare(rid, facts[rid], _expect(model, [store]))
            if cards is not None:
                checks.append(_card_check(rid, facts[rid], cards.card_settlements([store])))
    checks += _compare(HQ, facts[HQ], _expect(model, list(site.stores)))
    if model.chain_prices:
        checks += [_check_prices(rid, _state_of(root, site, rid, hq_dsn), model)
                   for rid in site.replicas]  # fmt: skip
    if cards is not None:
        checks.append(_card_check(HQ, facts[HQ], cards.card_settlements(list(site.stores))))
    return checks


def _state_of(root: Path, site: Site, rid: str, hq_dsn: str | None) -> sqlite3.Connection:
    """`rid`'s state: its log file, or for HQ on PostgreSQL its events folded afresh."""
    if rid == HQ and hq_dsn is not None:
        return _scratch(pg_facts.event_batches(hq_dsn), HQ, site.price_policy)
    return open_sync(site.data_dir(root, rid) / "log.db", readonly=True)


def count_conflicts(root: Path, site: Site, hq_dsn: str | None = None) -> dict[str, Counter[str]]:
    """Conflicts `conflict.detect` finds in each replica's log, by kind (for HQ on
    PostgreSQL: in its events, folded into a scratch state)."""
    out = {}
    for rid in site.replicas:
        if rid == HQ and hq_dsn is not None:
            conn = _scratch(pg_facts.event_batches(hq_dsn), HQ, site.price_policy)
        else:
            conn = open_sync(site.data_dir(root, rid) / "log.db", readonly=True)
        try:
            out[rid] = Counter(c.kind for c in detect(conn, from_state(conn)))
        finally:
            conn.close()
    return out
