"""The effective product of a SKU, derived from ALL its catalog writes by a price policy.

Every `product.upserted` and `price.set` is kept in `st_catalog_writes`; `st_products`
is recomputed for the SKUs a batch touches. The effective row is a pure function of the
set of writes (spec: `crdt.LWWRegister`), so it is the same on every replica:

- name, tax_rate_bp, active: from the latest `product.upserted` by (hlc, origin, seq).
  A SKU with only `price.set` writes has no product row yet.
- prices per store (fold version 8): the chain price (`st_products.price`) is chosen
  from the chain's writes: products and HQ's `price.set`. A till's `price.set` is its
  store's override (the store is its origin before '/'); the store's price is chosen
  from the chain's writes and its own, and where its own wins it is a row of
  `st_store_prices`, which that store's tills sell at; elsewhere the chain price holds.
  So a store manager's price never reaches another store or HQ's chain price, and a
  later chain price from HQ replaces an older override. `price.set` events written
  before this change are read the same way, by origin: HQ's set the chain price, a
  till's its store's (before, a till's was written into every store's catalog).
- a price, chain or store, by policy. A policy only arbitrates between
  concurrent writes (`LWWRegister.concurrent`: each origin's latest write whose HLC wall
  time is within `window_ms` of the overall latest); a write made after the others had
  settled is simply the latest, whoever made it:
  - "latest":  the max write by (hlc, origin, seq) (plain LWW);
  - "hq_wins": HQ's write among the concurrent ones, else the latest;
  - "lowest":  the lowest price among the concurrent ones; ties go to the later write.

Superseded writes take no part at all (fold version 6). A `conflict.resolved` with
action `supersede` names catalog writes by event id; each one it may supersede is left
out of its SKU's writes, whatever its HLC, so the next write by the rules above is
effective: the deterministic way out of a write dated far ahead (a till or HQ with a
skewed clock), which otherwise wins last-writer-wins until real time passes it. A
supersession is a row per (write, resolution) in `st_superseded`, kept whether or not
the write has arrived yet, so the state is the same in any arrival order. Who may
supersede what (`may_supersede`): HQ any write; a till the writes of its own store's
tills, never HQ's or another store's (a till's key cannot undo the chain's catalog).

Catalog writes are rare next to sales, so a per-SKU SELECT per batch is fine.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from core.clock import hlc_ms
from core.events import HQ

__all__ = [
    "PricePolicy",
    "StorePriceRow",
    "Write",
    "by_store",
    "choose_price",
    "effective",
    "is_chain",
    "may_supersede",
    "refresh",
    "refresh_all",
    "store_prices",
    "supersede",
]

PricePolicy = Literal["latest", "hq_wins", "lowest"]


class Write(NamedTuple):
    """One row of st_catalog_writes (name/tax/active are None for `price.set`)."""

    eid: str
    hlc: int
    origin: str
    seq: int
    kind: str
    name: str | None
    price: int
    tax_rate_bp: int | None
    active: int | None


ProductRow = tuple[str, str, int, int, int, str, str]


def _store(origin_col: str) -> str:
    """SQL for the store of an origin column (`s1/t2` -> `s1`, `hq` -> `hq`)."""
    return f"substr({origin_col}, 1, instr({origin_col} || '/', '/') - 1)"


# A write `w` is out when a resolution that may supersede it names it (`may_supersede`).
SUPERSEDED = (
    "EXISTS (SELECT 1 FROM st_superseded x WHERE x.eid = w.eid AND"
    f" (x.by_origin = '{HQ}' OR {_store('x.by_origin')} = {_store('w.origin')}))"
)

_SELECT = (
    "SELECT eid, hlc, origin, seq, kind, name, price, tax_rate_bp, active"
    f" FROM st_catalog_writes w WHERE sku = ? AND NOT {SUPERSEDED}"
)


def may_supersede(by_origin: str, write_origin: str) -> bool:
    """Whether a resolution from `by_origin` takes the write of `write_origin` out: HQ's
    take any; a till's only its own store's (the store is the id before '/')."""
    return by_origin == HQ or by_origin.split("/")[0] == write_origin.split("/")[0]


def supersede(conn: sqlite3.Connection, rows: Sequence[tuple[str, str, str]]) -> set[str]:
    """Record (superseded eid, resolution eid, resolution origin) rows; the SKUs of those
    writes already here, to recompute (the others are left out when they arrive)."""
    conn.executemany("INSERT OR IGNORE INTO st_superseded VALUES (?, ?, ?)", rows)
    return {
        sku
        for eid, _, _ in rows
        for (sku,) in conn.execute("SELECT sku FROM st_catalog_writes WHERE eid = ?", (eid,))
    }


def _key(w: Write) -> tuple[int, str, int]:
    return (w.hlc, w.origin, w.seq)


def choose_price(writes: Sequence[Write], policy: PricePolicy, window_ms: int) -> Write:
    """The write whose price is effective; `writes` must be non-empty."""
    if policy == "latest":
        return max(writes, key=_key)
    concurrent = _concurrent(writes, window_ms)
    if policy == "hq_wins":
        return next((w for w in concurrent if w.origin == HQ), concurrent[0])
    return min(concurrent, key=lambda w: w.price)  # min keeps the first: the latest on ties


def _concurrent(writes: Sequence[Write], window_ms: int) -> list[Write]:
    """Each origin's latest write within `window_ms` of the overall latest, latest first.

    Before, "hq_wins" let any HQ write beat every store write however much later the
    store's came, so a store manager's price change was accepted and never took effect.
    """
    latest: dict[str, Write] = {}
    for w in writes:  # each origin's own writes are causally ordered: keep its last
        if w.origin not in latest or _key(w) > _key(latest[w.origin]):
            latest[w.origin] = w
    top = hlc_ms(max(latest.values(), key=_key).hlc)
    return sorted(
        (w for w in latest.values() if top - hlc_ms(w.hlc) <= window_ms), key=_key, reverse=True
    )


def is_chain(w: Write) -> bool:
    """A write of the chain's catalog: a product (HQ's to define) or HQ's price. Any
    other price write (a till's `price.set`, a till's chosen price) is its store's."""
    return w.kind == "product" or w.origin == HQ


def by_store(writes: Sequence[Write]) -> dict[str, list[Write]]:
    """Each store's own price writes (the store is the origin before '/')."""
    out: dict[str, list[Write]] = {}
    for w in writes:
        if not is_chain(w):
            out.setdefault(w.origin.split("/")[0], []).append(w)
    return out


def effective(
    sku: str, writes: Sequence[Write], policy: PricePolicy, window_ms: int
) -> ProductRow | None:
    """The chain's product: its fields and the chain price (from the chain's writes)."""
    products = [w for w in writes if w.kind == "product"]
    if not products:
        return None
    base = max(products, key=_key)
    priced = choose_price([w for w in writes if is_chain(w)], policy, window_ms)
    assert base.name is not None and base.tax_rate_bp is not None and base.active is not None
    return (sku, base.name, priced.price, base.tax_rate_bp, base.active, base.eid, priced.eid)


StorePriceRow = tuple[str, str, int, str]  # (store, sku, price, price_eid)


def store_prices(
    sku: str, writes: Sequence[Write], policy: PricePolicy, window_ms: int
) -> list[StorePriceRow]:
    """Each store's override in effect: the policy over the chain's writes and the
    store's own; a row only where the store's own write wins (else the chain price
    holds there: a later chain price replaces an older override)."""
    chain = [w for w in writes if is_chain(w)]
    rows = []
    for store, own in sorted(by_store(writes).items()):
        won = choose_price(chain + own, policy, window_ms)
        if not is_chain(won):
            rows.append((store, sku, won.price, won.eid))
    return rows


def refresh(
    conn: sqlite3.Connection, skus: Iterable[str], policy: PricePolicy, window_ms: int
) -> None:
    """Recompute st_products and st_store_prices for `skus` from their writes."""
    for sku in sorted(skus):
        writes = [Write(*r) for r in conn.execute(_SELECT, (sku,))]
        row = effective(sku, writes, policy, window_ms)
        conn.execute("DELETE FROM st_store_prices WHERE sku = ?", (sku,))
        if row is None:
            conn.execute("DELETE FROM st_products WHERE sku = ?", (sku,))
            continue
        conn.execute("INSERT OR REPLACE INTO st_products VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        conn.executemany(
            "INSERT INTO st_store_prices VALUES (?, ?, ?, ?)",
            store_prices(sku, writes, policy, window_ms),
        )


def refresh_all(conn: sqlite3.Connection, policy: PricePolicy, window_ms: int) -> None:
    """After a policy change: every effective product may differ."""
    skus = [r[0] for r in conn.execute("SELECT DISTINCT sku FROM st_catalog_writes")]
    refresh(conn, skus, policy, window_ms)
