"""DDL of the derived state tables (all `st_`), and the canonical order to read them in.

Every table here is a function of the SET of events applied, never of their arrival
order: rows are keyed by event ids or natural keys, and anything that depends on
several events (stock on hand, the effective product, which void restocks a sale) is
either recomputed from the kept inputs or a view. `DIGEST_ORDER` lists each table and
view with a total ORDER BY; `queries.state_digest` covers its tables (`DIGESTED`), each
kept as a multiset hash by triggers (`core.digest`) in the fold's own transaction (the
sales register's inserts counted by the fold itself: `COUNTED_BY_FOLD`).

Tables are `WITHOUT ROWID` where the key is natural, so rows live in key order and no
rowid (an arrival-order artefact) exists to leak into anything.
"""

from __future__ import annotations

import sqlite3

from conflict.stock import store_sql
from core import digest

__all__ = [
    "COUNTED_BY_FOLD", "DIGESTED", "DIGEST_ORDER", "DIGEST_WHERE", "TABLES", "VIEWS", "create",
    "drop",
]  # fmt: skip

TABLES: dict[str, str] = {
    # Seqs of every event folded, as inclusive runs per origin: makes `apply` idempotent
    # per event. The log delivers each origin contiguously, so this is one row per origin.
    "st_seen": "origin TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,"
    " PRIMARY KEY (origin, lo)",
    # Stock: the reset-counter, per (store, sku) - `stock.stock_store(origin)` of the
    # event that moves it. Sale-line moves are not stored row by row (that would be most
    # of the write volume): they live in st_sales.lines, and st_buckets keeps every
    # move's delta summed per (store, sku, minute), so a recount reads whole minutes from
    # st_buckets and only the count's own minute move by move. Keys put sku before store:
    # most rows of a till share one store, and comparing it first lengthened every key
    # comparison of the ingest upserts (+4.7k instructions per upsert, callgrind).
    "st_buckets": "store TEXT NOT NULL, sku TEXT NOT NULL, bucket INTEGER NOT NULL,"
    " delta INTEGER NOT NULL, PRIMARY KEY (sku, store, bucket)",
    # Moves other than sale lines: receipts, adjustments, void and refund restocks.
    "st_moves": "store TEXT NOT NULL, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " eid TEXT NOT NULL, line INTEGER NOT NULL, delta INTEGER NOT NULL,"
    " PRIMARY KEY (sku, store, hlc, eid, line)",
    "st_stock": "store TEXT NOT NULL, sku TEXT NOT NULL, count_hlc INTEGER NOT NULL,"
    " count_origin TEXT NOT NULL, count_seq INTEGER NOT NULL, count INTEGER NOT NULL,"
    " delta_after INTEGER NOT NULL, PRIMARY KEY (sku, store)",
    "st_counts": "eid TEXT PRIMARY KEY, store TEXT NOT NULL, sku TEXT NOT NULL,"
    " hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL, count INTEGER NOT NULL",
    # Catalog: every write kept; st_products is derived from them by the price policy.
    "st_catalog_writes": "eid TEXT PRIMARY KEY, sku TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT,"
    " price INTEGER NOT NULL, tax_rate_bp INTEGER, active INTEGER",
    # Catalog writes a `supersede` resolution names (by_origin decides if it may).
    "st_superseded": "eid TEXT NOT NULL, by_eid TEXT NOT NULL, by_origin TEXT NOT NULL,"
    " PRIMARY KEY (eid, by_eid)",
    "st_products": "sku TEXT PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL,"
    " tax_rate_bp INTEGER NOT NULL, active INTEGER NOT NULL, product_eid TEXT NOT NULL,"
    " price_eid TEXT NOT NULL",
    # A store's price override where it is in effect (`catalog.store_prices`).
    "st_store_prices": "store TEXT NOT NULL, sku TEXT NOT NULL, price INTEGER NOT NULL,"
    " price_eid TEXT NOT NULL, PRIMARY KEY (sku, store)",
    "st_config": "key TEXT PRIMARY KEY, value TEXT NOT NULL",
    # Sales register. Lines and payments are JSON arrays in the sale row (one row per
    # sale keeps ingest fast); the st_sale_lines / st_payments views expand them.
    # lines: the event's SaleLine objects as JSON (discount/tax/tax_rate_bp omitted when 0);
    # payments: [[method, amount, last4, auth, reference(, approval, override_by)], ...]
    # (the last two only when set) - never the card token.
    "st_sales": "id TEXT PRIMARY KEY, origin TEXT NOT NULL, seq INTEGER NOT NULL,"
    " hlc INTEGER NOT NULL, receipt TEXT NOT NULL, total INTEGER NOT NULL,"
    " change INTEGER NOT NULL, shift TEXT NOT NULL, cashier TEXT NOT NULL,"
    " nlines INTEGER NOT NULL, lines TEXT NOT NULL, payments TEXT NOT NULL,"
    " tax_mode TEXT",  # NULL: a sale before tills computed tax (schema 6)
    # Sales count and gross per shift ('' for none), summed as sales are folded: a
    # status poll reads these few rows instead of scanning every sale (plain sums, and
    # each sale is folded once, so they are order-free like everything else here).
    "st_totals": "shift TEXT PRIMARY KEY, sales INTEGER NOT NULL, gross INTEGER NOT NULL",
    "st_voids": "eid TEXT PRIMARY KEY, sale_id TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, reason TEXT NOT NULL",
    # Which void currently restocks a sale: the earliest by (hlc, origin, seq).
    "st_void_applied": "sale_id TEXT PRIMARY KEY, void_eid TEXT NOT NULL, hlc INTEGER NOT NULL",
    "st_refunds": "eid TEXT PRIMARY KEY, sale_id TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, amount INTEGER NOT NULL,"
    " method TEXT NOT NULL, restock INTEGER NOT NULL, reason TEXT NOT NULL",
    "st_refund_lines": "refund_id TEXT NOT NULL, idx INTEGER NOT NULL, line INTEGER NOT NULL,"
    " qty INTEGER NOT NULL, amount INTEGER NOT NULL, tax INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (refund_id, idx)",
    # Voids/refunds whose sale has not arrived yet; linked when it does.
    "st_waiting": "sale_id TEXT NOT NULL, eid TEXT NOT NULL, PRIMARY KEY (sale_id, eid)",
    # Shifts: earliest open and latest close win, by (hlc, origin, seq).
    "st_shift_open": "shift TEXT PRIMARY KEY, eid TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, float_amount INTEGER NOT NULL,"
    " cashier TEXT NOT NULL",
    "st_shift_close": "shift TEXT PRIMARY KEY, eid TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, counted_cash INTEGER NOT NULL",
    # Card floor limits HQ set (card.limits_set): every write kept, the latest in force.
    "st_card_limits": "eid TEXT PRIMARY KEY, store TEXT NOT NULL, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL, seq INTEGER NOT NULL, per_payment INTEGER NOT NULL,"
    " till_total INTEGER NOT NULL, till_count INTEGER NOT NULL, max_age_s INTEGER NOT NULL",
    # Outcomes of deferred card payments (card.captured / declined / expired): every
    # one kept, even before its sale arrives or when two tills forwarded one payment;
    # st_card_status picks the one in force.
    "st_card_outcomes": "eid TEXT PRIMARY KEY, payment TEXT NOT NULL, kind TEXT NOT NULL,"
    " hlc INTEGER NOT NULL, origin TEXT NOT NULL, seq INTEGER NOT NULL, detail TEXT NOT NULL",
    "st_resolutions": "eid TEXT PRIMARY KEY, conflict TEXT NOT NULL, action TEXT NOT NULL,"
    " by_ TEXT NOT NULL, reason TEXT NOT NULL, price INTEGER, hlc INTEGER NOT NULL,"
    " origin TEXT NOT NULL",
    # What each resolution does if it is its conflict's effective one (`effects.py`):
    # kind 'move' (n = delta) | 'count' (n = count) | 'price' (n = price).
    "st_effects": "eid TEXT NOT NULL, idx INTEGER NOT NULL, kind TEXT NOT NULL,"
    " store TEXT NOT NULL, sku TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (eid, idx)",
    # Per conflict, the resolution whose effects are in the state (if it has any).
    "st_applied": "conflict TEXT PRIMARY KEY, eid TEXT NOT NULL",
}

_INDEXES = (
    "st_counts_sku ON st_counts (sku, store, hlc)",
    "st_catalog_writes_sku ON st_catalog_writes (sku)",
    "st_sales_receipt ON st_sales (receipt)",
    "st_sales_hlc ON st_sales (hlc)",
    # The few sales with a deferred card payment, for st_card_status: a partial index
    # SQLite uses for the view's own LIKE (the same text), so listing card conflicts
    # reads those sales, not every sale (0.8 s at 1M sales). Not state: no digest.
    """st_sales_deferred ON st_sales (id) WHERE payments LIKE '%"deferred"%'""",
    "st_voids_sale ON st_voids (sale_id)",
    "st_refunds_sale ON st_refunds (sale_id)",
    "st_resolutions_conflict ON st_resolutions (conflict, hlc, origin)",
    "st_card_outcomes_payment ON st_card_outcomes (payment)",
)

# Derived by query, so "voided" and "refunded" can never disagree with the events.
VIEWS: dict[str, str] = {
    "st_sale_lines": "SELECT s.id AS sale_id, CAST(j.key AS INTEGER) AS line,"
    f" {store_sql('s.origin')} AS store, j.value ->> '$.sku' AS sku, j.value ->> '$.qty' AS qty,"
    " j.value ->> '$.unit_price' AS unit_price, COALESCE(j.value ->> '$.discount', 0) AS discount,"
    " COALESCE(j.value ->> '$.tax', 0) AS tax, COALESCE(j.value ->> '$.tax_rate_bp', 0)"
    " AS tax_rate_bp, s.hlc AS hlc"
    " FROM st_sales s, json_each(s.lines) j",
    "st_payments": "SELECT s.id AS sale_id, CAST(j.key AS INTEGER) AS idx,"
    " j.value ->> 0 AS method, j.value ->> 1 AS amount, j.value ->> 2 AS last4,"
    " j.value ->> 3 AS auth, j.value ->> 4 AS reference,"
    " NULLIF(j.value ->> 5, '') AS approval, NULLIF(j.value ->> 6, '') AS override_by"
    " FROM st_sales s, json_each(s.payments) j",
    # Every deferred card payment and the outcome in force, by precedence: captured over
    # declined over expired (money the processor took is the store's whoever else gave
    # up on it; a decline is the processor's word, an expiry only a till's), then the
    # earliest by (hlc, origin, seq). NULL: outstanding. A function of the set of
    # outcomes, whatever order they arrived in or how many tills wrote one.
    "st_card_status": "SELECT p.sale_id || '#' || p.idx AS payment, p.sale_id AS sale_id,"
    f" p.idx AS idx, {store_sql('s.origin')} AS store, s.origin AS till, s.hlc AS hlc,"
    " p.amount AS amount, s.receipt AS receipt, s.cashier AS cashier,"
    " p.override_by AS override_by, o.kind AS outcome, o.eid AS outcome_eid,"
    " o.detail AS detail"
    " FROM st_sales s JOIN st_payments p ON p.sale_id = s.id"
    " LEFT JOIN (SELECT payment, kind, eid, detail, ROW_NUMBER() OVER (PARTITION BY payment"
    "  ORDER BY CASE kind WHEN 'captured' THEN 0 WHEN 'declined' THEN 1 ELSE 2 END,"
    "  hlc, origin, seq) AS rank FROM st_card_outcomes) o"
    "  ON o.payment = p.sale_id || '#' || p.idx AND o.rank = 1"
    # The LIKE skips, row by row, the sales with no deferred payment before their JSON
    # is expanded: most sales (cash, online cards) never reach json_each here.
    " WHERE s.payments LIKE '%\"deferred\"%' AND p.method = 'card' AND p.auth = 'deferred'",
    # Every stock move with its cause, sale lines included (for reports and detection).
    "st_all_moves": "SELECT store, sku, hlc, eid, line, delta FROM st_moves"
    " UNION ALL SELECT store, sku, hlc, sale_id, line, -qty FROM st_sale_lines",
    "st_sale_status": "SELECT s.id AS sale_id,"
    " EXISTS (SELECT 1 FROM st_voids v WHERE v.sale_id = s.id) AS voided,"
    " COALESCE((SELECT SUM(r.amount) FROM st_refunds r WHERE r.sale_id = s.id), 0) AS refunded"
    " FROM st_sales s",
    "st_stock_levels": "SELECT store, sku, count + delta_after AS on_hand FROM st_stock",
}

# Every table and view, with an ORDER BY on a unique key: the digest's reading order.
DIGEST_ORDER: tuple[tuple[str, str], ...] = (
    ("st_seen", "origin, lo"),
    ("st_buckets", "sku, store, bucket"),
    ("st_moves", "sku, store, hlc, eid, line"),
    ("st_stock", "sku, store"),
    ("st_counts", "eid"),
    ("st_catalog_writes", "eid"),
    ("st_superseded", "eid, by_eid"),
    ("st_products", "sku"),
    ("st_store_prices", "sku, store"),
    ("st_sales", "id"),
    ("st_totals", "shift"),
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
    ("st_effects", "eid, idx"),
    ("st_applied", "conflict"),
    ("st_card_limits", "eid"),
    ("st_card_outcomes", "eid"),
    ("st_card_status", "payment"),
    ("st_all_moves", "sku, store, hlc, eid, line"),
    ("st_sale_status", "sale_id"),
    ("st_stock_levels", "sku, store"),
)

# Rows that mean "nothing" and whose presence depends on arrival order, left out of the
# digest: a bucket summed back to 0 (e.g. a void restock moved to an earlier void, or a
# sale and a receipt in one minute) equals no bucket for every recount.
DIGEST_WHERE: dict[str, str] = {"st_buckets": "delta != 0"}

# What `queries.state_digest` covers: every table of DIGEST_ORDER. The views are left
# out: each is a query over these tables, so equal tables give equal views, and a view
# cannot carry a trigger-maintained digest (`core.digest`).
DIGESTED: tuple[str, ...] = tuple(name for name, _ in DIGEST_ORDER if name in TABLES)


# Tables whose inserts the fold counts into their digest itself (`core.digest.add_rows`)
# instead of a trigger per row: the sales register, a row per sale, where the trigger's
# call back into Python was ~3 µs of the writer's ~20 per ingested sale (issue 19).
COUNTED_BY_FOLD = ("st_sales",)

# Tables earlier fold versions kept, dropped with the state when it is rebuilt. st_skewed
# (version <= 4) held what each receiver's own wall clock thought too far ahead: state
# that differed between replicas holding the same events.
RETIRED = ("st_skewed",)


def create(conn: sqlite3.Connection) -> None:
    for name, cols in TABLES.items():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {name} ({cols}) WITHOUT ROWID")
    for idx in _INDEXES:
        conn.execute(f"CREATE INDEX IF NOT EXISTS {idx}")
    for name, select in VIEWS.items():
        conn.execute(f"CREATE VIEW IF NOT EXISTS {name} AS {select}")
    digest.maintain(conn, DIGESTED, DIGEST_WHERE, counted=COUNTED_BY_FOLD)


def drop(conn: sqlite3.Connection) -> None:
    # Views first: dropping a table a view reads is allowed, but keep the order obvious.
    for name in VIEWS:
        conn.execute(f"DROP VIEW IF EXISTS {name}")
    for name in (*TABLES, *RETIRED):  # indexes and digest triggers go with their tables
        conn.execute(f"DROP TABLE IF EXISTS {name}")
    digest.drop(conn)
