"""DDL of the derived state tables (all `st_`), and the canonical order to read them in.

Every table here is a function of the SET of events applied, never of their arrival
order: rows are keyed by event ids or natural keys, and anything that depends on
several events (stock on hand, the effective product, which void restocks a sale) is
either recomputed from the kept inputs or a view. `DIGEST_ORDER` lists each table and
view with a total ORDER BY, which `queries.state_digest` hashes.

Tables are `WITHOUT ROWID` where the key is natural, so rows live in key order and no
rowid (an arrival-order artefact) exists to leak into anything.
"""

from __future__ import annotations

import sqlite3

__all__ = ["DIGEST_ORDER", "TABLES", "VIEWS", "create", "drop"]

TABLES: dict[str, str] = {
    # (origin, seq) of every event folded: makes `apply` idempotent per event.
    "st_seen": "origin TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (origin, seq)",
    # Stock: the reset-counter. Keyed by (sku, hlc) first so a recount's
    # SUM(delta WHERE hlc > count_hlc) is a range scan of one SKU.
    "st_moves": "sku TEXT NOT NULL, hlc INTEGER NOT NULL, eid TEXT NOT NULL,"
    " line INTEGER NOT NULL, delta INTEGER NOT NULL, PRIMARY KEY (sku, hlc, eid, line)",
    "st_stock": "sku TEXT PRIMARY KEY, count_hlc INTEGER NOT NULL, count_origin TEXT NOT NULL,"
    " count_seq INTEGER NOT NULL, count INTEGER NOT NULL, delta_after INTEGER NOT NULL",
    "st_counts": "eid TEXT PRIMARY KEY, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, count INTEGER NOT NULL",
    # Catalog: every write kept; st_products is derived from them by the price policy.
    "st_catalog_writes": "eid TEXT PRIMARY KEY, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT,"
    " price INTEGER NOT NULL, tax_rate_bp INTEGER, active INTEGER",
    "st_products": "sku TEXT PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL,"
    " tax_rate_bp INTEGER NOT NULL, active INTEGER NOT NULL, product_eid TEXT NOT NULL,"
    " price_eid TEXT NOT NULL",
    "st_config": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    # Sales register.
    "st_sales": "id TEXT PRIMARY KEY, origin TEXT NOT NULL, seq INTEGER NOT NULL,"
    " hlc INTEGER NOT NULL, receipt TEXT NOT NULL, total INTEGER NOT NULL,"
    " change INTEGER NOT NULL, shift TEXT NOT NULL, cashier TEXT NOT NULL,"
    " nlines INTEGER NOT NULL",
    "st_sale_lines": "sale_id TEXT NOT NULL, line INTEGER NOT NULL, sku TEXT NOT NULL,"
    " qty INTEGER NOT NULL, unit_price INTEGER NOT NULL, discount INTEGER NOT NULL,"
    " tax INTEGER NOT NULL, PRIMARY KEY (sale_id, line)",
    # No card token here: last4 and auth mode are all the register needs.
    "st_payments": "sale_id TEXT NOT NULL, idx INTEGER NOT NULL, method TEXT NOT NULL,"
    " amount INTEGER NOT NULL, last4 TEXT, auth TEXT, reference TEXT NOT NULL,"
    " PRIMARY KEY (sale_id, idx)",
    "st_voids": "eid TEXT PRIMARY KEY, sale_id TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL",
    # Which void currently restocks a sale: the earliest by (hlc, origin, seq).
    "st_void_applied": "sale_id TEXT PRIMARY KEY, void_eid TEXT NOT NULL, hlc INTEGER NOT NULL",
    "st_refunds": "eid TEXT PRIMARY KEY, sale_id TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, amount INTEGER NOT NULL,"
    " method TEXT NOT NULL, restock INTEGER NOT NULL, reason TEXT NOT NULL",
    "st_refund_lines": "refund_id TEXT NOT NULL, idx INTEGER NOT NULL, line INTEGER NOT NULL,"
    " qty INTEGER NOT NULL, amount INTEGER NOT NULL, PRIMARY KEY (refund_id, idx)",
    # Voids/refunds whose sale has not arrived yet; linked when it does.
    "st_waiting": "sale_id TEXT NOT NULL, eid TEXT NOT NULL, PRIMARY KEY (sale_id, eid)",
    # Shifts: earliest open and latest close win, by (hlc, origin, seq).
    "st_shift_open": "shift TEXT PRIMARY KEY, eid TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, float_amount INTEGER NOT NULL,"
    " cashier TEXT NOT NULL",
    "st_shift_close": "shift TEXT PRIMARY KEY, eid TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, counted_cash INTEGER NOT NULL",
    "st_resolutions": "eid TEXT PRIMARY KEY, conflict TEXT NOT NULL, action TEXT NOT NULL,"
    " by_ TEXT NOT NULL, reason TEXT NOT NULL, price INTEGER, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL",
    "st_skewed": "eid TEXT PRIMARY KEY, origin TEXT NOT NULL, hlc INTEGER NOT NULL",
}

_INDEXES = (
    "st_counts_sku ON st_counts (sku, hlc)",
    "st_catalog_writes_sku ON st_catalog_writes (sku)",
    "st_sales_receipt ON st_sales (receipt)",
    "st_sales_shift ON st_sales (shift)",
    "st_voids_sale ON st_voids (sale_id)",
    "st_refunds_sale ON st_refunds (sale_id)",
    "st_resolutions_conflict ON st_resolutions (conflict)",
)

# Derived by query, so "voided" and "refunded" can never disagree with the events.
VIEWS: dict[str, str] = {
    "st_sale_status": "SELECT s.id AS sale_id,"
    " EXISTS (SELECT 1 FROM st_voids v WHERE v.sale_id = s.id) AS voided,"
    " COALESCE((SELECT SUM(r.amount) FROM st_refunds r WHERE r.sale_id = s.id), 0) AS refunded"
    " FROM st_sales s",
    "st_stock_levels": "SELECT sku, count + delta_after AS on_hand FROM st_stock",
}

# Every table and view, with an ORDER BY on a unique key: the digest's reading order.
DIGEST_ORDER: tuple[tuple[str, str], ...] = (
    ("st_seen", "origin, seq"),
    ("st_moves", "sku, hlc, eid, line"),
    ("st_stock", "sku"),
    ("st_counts", "eid"),
    ("st_catalog_writes", "eid"),
    ("st_products", "sku"),
    ("st_sales", "id"),
    ("st_sale_lines", "sale_id, line"),
    ("st_payments", "sale_id, idx"),
    ("st_voids", "eid"),
    ("st_void_applied", "sale_id"),
    ("st_refunds", "eid"),
    ("st_refund_lines", "refund_id, idx"),
    ("st_waiting", "sale_id, eid"),
    ("st_shift_open", "shift"),
    ("st_shift_close", "shift"),
    ("st_resolutions", "eid"),
    ("st_skewed", "eid"),
    ("st_sale_status", "sale_id"),
    ("st_stock_levels", "sku"),
)


def create(conn: sqlite3.Connection) -> None:
    for name, cols in TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}) WITHOUT ROWID")
    for idx in _INDEXES:
        conn.execute(f"CREATE INDEX IF NOT EXISTS {idx}")
    for name, select in VIEWS.items():
        conn.execute(f"CREATE VIEW IF NOT EXISTS {name} AS {select}")


def drop(conn: sqlite3.Connection) -> None:
    # Views first: dropping a table a view reads is allowed, but keep the order obvious.
    for name in VIEWS:
        conn.execute(f"DROP VIEW IF EXISTS {name}")
    for name in TABLES:  # indexes go with their tables
        conn.execute(f"DROP TABLE IF EXISTS {name}")
