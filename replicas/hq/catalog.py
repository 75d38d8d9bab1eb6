"""HQ's effective catalog on PostgreSQL: `hq_products` and `hq_store_prices`, recomputed
for the SKUs a batch may change, from their catalog writes, by `conflict.catalog`.

The writes are those the SQLite fold reads (`conflict.catalog`'s `_SELECT`): every
`product.upserted` and `price.set`, and the price of each effective `choose_price`
resolution (`hq_applied_effects`), less those a `supersede` takes out - a write named
by a resolution from HQ, or from a till of the write's own store (`may_supersede`),
whether the resolution arrived before or after the write. A batch may change the
products of the SKUs it writes, of the writes its supersedes name, and of the price
effects of every resolution of a conflict it resolves (the effective one may change).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from psycopg import AsyncConnection

from conflict.catalog import PricePolicy
from core.events import HQ
from replicas.hq.project import Facts, products_of

__all__ = ["refresh_products", "touched_skus"]

_SUPERSEDED = (
    "EXISTS (SELECT 1 FROM hq_superseded x WHERE x.eid = w.eid AND"
    f" (x.by_origin = '{HQ}' OR split_part(x.by_origin, '/', 1) = split_part(w.origin, '/', 1)))"
)
_WRITES = f"""
SELECT sku, eid, hlc, origin, seq, kind, name, price, tax_rate_bp, active FROM (
  SELECT sku, eid, hlc, origin, seq, kind, name, price, tax_rate_bp, active
    FROM hq_catalog_writes WHERE sku = ANY(%(skus)s)
  UNION ALL SELECT sku, eid, hlc, origin, seq, 'price', NULL, n, NULL, NULL
    FROM hq_applied_effects WHERE kind = 'price' AND sku = ANY(%(skus)s)
) w WHERE NOT {_SUPERSEDED}
"""
_TOUCHED = """
SELECT sku FROM hq_catalog_writes WHERE eid = ANY(%(eids)s)
UNION SELECT e.sku FROM hq_resolution_effects e WHERE e.kind = 'price'
  AND (e.eid = ANY(%(eids)s)
       OR e.eid IN (SELECT eid FROM hq_resolutions WHERE conflict = ANY(%(conflicts)s)))
"""


async def touched_skus(conn: AsyncConnection[Any], facts: Facts) -> set[str]:
    """The SKUs whose effective product `facts` (written already) may have changed."""
    skus = set(facts.catalog_skus)
    if facts.resolved or facts.superseded:
        args = {"eids": sorted(facts.superseded), "conflicts": sorted(facts.resolved)}
        cur = await conn.execute(_TOUCHED, args)
        skus |= {str(sku) for (sku,) in await cur.fetchall()}
    return skus


async def refresh_products(
    conn: AsyncConnection[Any], skus: Iterable[str] | None, policy: PricePolicy, window_ms: int
) -> None:
    """hq_products and hq_store_prices of `skus` (None: every SKU), by the price policy."""
    if skus is not None and not skus:
        return
    if skus is None:
        cur = await conn.execute(
            "SELECT sku FROM hq_catalog_writes UNION SELECT sku FROM hq_products"
        )
        wanted = sorted(str(s) for (s,) in await cur.fetchall())
    else:
        wanted = sorted(skus)
    cur = await conn.execute(_WRITES, {"skus": wanted})
    writes: dict[str, list[tuple[object, ...]]] = {sku: [] for sku in wanted}
    for sku, *rest in await cur.fetchall():
        writes[sku].append(tuple(rest))
    products, overrides = products_of(sorted(writes.items()), policy, window_ms)
    await conn.execute("DELETE FROM hq_products WHERE sku = ANY(%s)", (wanted,))
    await conn.execute("DELETE FROM hq_store_prices WHERE sku = ANY(%s)", (wanted,))
    async with conn.cursor() as cur2:
        if products:
            await cur2.executemany(
                "INSERT INTO hq_products VALUES (%s, %s, %s, %s, %s, %s, %s)", products
            )
        if overrides:
            await cur2.executemany("INSERT INTO hq_store_prices VALUES (%s, %s, %s, %s)", overrides)
