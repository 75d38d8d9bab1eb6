"""HQ's PostgreSQL schema: versioned migrations of the event table and the read model.

`hq_events` holds every event HQ accepted, keyed by (store, origin, seq) and
partitioned by hash of store. The store is a function of the origin (`s1/t2` -> `s1`,
HQ's own events -> `hq`), so the key is (origin, seq) with the partition key in front,
as PostgreSQL wants of a partitioned table's unique key. Each origin has one writer
(an ingest worker owns whole stores), so `hq_heads` is the version vector.

The read model is fact tables (one row per event, or per line of one), written in the
same transaction as the events, and views that derive what depends on several events
(stock on hand, the winning shift open and close, the restock of a voided sale), so
no figure depends on arrival order. `hq_products` is the exception: the effective
product by the site's price policy, recomputed in Python (`conflict.catalog`) for the
SKUs a batch writes. The views whose names start `bi_` are the ones for BI tools.

A migration runs once, in order, under an advisory lock (workers may start together);
`hq_schema` records the version reached. Add one: append to MIGRATIONS, never edit one.
"""

from __future__ import annotations

from typing import Any

import psycopg

from core.errors import SchemaTooNew
from core.fold import FLAG_REVOKED, FLAG_UNAPPLIED

__all__ = ["EVENT_PARTITIONS", "MIGRATIONS", "SCHEMA_VERSION", "migrate"]

EVENT_PARTITIONS = 16
_LOCK = 0x7E11_4D35  # pg_advisory_xact_lock key: "tillmesh hq schema"


def _event_partitions() -> str:
    return "\n".join(
        f"CREATE TABLE hq_events_{i:02d} PARTITION OF hq_events"
        f" FOR VALUES WITH (MODULUS {EVENT_PARTITIONS}, REMAINDER {i});"
        for i in range(EVENT_PARTITIONS)
    )


_V1 = f"""
CREATE TABLE hq_meta (key text PRIMARY KEY, value text NOT NULL);
-- origin -> last seq it wrote before HQ revoked it; every worker reads it per batch.
INSERT INTO hq_meta VALUES ('revoked', '{{}}');
CREATE TABLE hq_events (
  store text NOT NULL, origin text NOT NULL, seq bigint NOT NULL, hlc bigint NOT NULL,
  type text NOT NULL, flags integer NOT NULL, hash bytea NOT NULL, raw bytea NOT NULL,
  PRIMARY KEY (store, origin, seq)
) PARTITION BY HASH (store);
{_event_partitions()}
CREATE TABLE hq_heads (
  origin text PRIMARY KEY, store text NOT NULL, seq bigint NOT NULL, hash bytea NOT NULL,
  last_hlc bigint NOT NULL, updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE hq_pending (
  origin text NOT NULL, seq bigint NOT NULL, hash bytea NOT NULL, raw bytea NOT NULL,
  PRIMARY KEY (origin, seq)
);
CREATE TABLE hq_quarantine (
  id bigserial PRIMARY KEY, received_ms bigint NOT NULL, peer text NOT NULL,
  origin text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, detail text NOT NULL,
  raw bytea NOT NULL
);

-- One row per sale, its lines and payments as JSON arrays (as the SQLite fold keeps them):
-- a sale is one row to write, not three (measured: 4.5 against 10 us of server CPU per
-- sale); the hq_sale_lines and hq_payments views expand them.
-- lines: [sale line objects: sku, qty, unit_price, discount and tax when not 0];
-- payments: [[method, amount, last4, auth, reference], ...] - never a card token.
CREATE TABLE hq_sales (
  id text PRIMARY KEY, store text NOT NULL, origin text NOT NULL, seq bigint NOT NULL,
  hlc bigint NOT NULL, receipt text NOT NULL, total bigint NOT NULL, change bigint NOT NULL,
  shift text NOT NULL, cashier text NOT NULL, lines jsonb NOT NULL, payments jsonb NOT NULL
);
CREATE INDEX hq_sales_hlc ON hq_sales (hlc);
CREATE VIEW hq_sale_lines AS
  SELECT s.id AS sale_id, (j.n - 1)::int AS line, s.store, j.l ->> 'sku' AS sku,
    (j.l ->> 'qty')::int8 AS qty, (j.l ->> 'unit_price')::int8 AS unit_price,
    COALESCE((j.l ->> 'discount')::int8, 0) AS discount,
    COALESCE((j.l ->> 'tax')::int8, 0) AS tax, s.hlc
  FROM hq_sales s, jsonb_array_elements(s.lines) WITH ORDINALITY AS j(l, n);
CREATE VIEW hq_payments AS
  SELECT s.id AS sale_id, (j.n - 1)::int AS idx, j.p ->> 0 AS method,
    (j.p ->> 1)::int8 AS amount, j.p ->> 2 AS last4, j.p ->> 3 AS auth, j.p ->> 4 AS reference
  FROM hq_sales s, jsonb_array_elements(s.payments) WITH ORDINALITY AS j(p, n);
CREATE TABLE hq_voids (
  eid text PRIMARY KEY, sale_id text NOT NULL, hlc bigint NOT NULL, origin text NOT NULL,
  seq bigint NOT NULL, reason text NOT NULL
);
CREATE INDEX hq_voids_sale ON hq_voids (sale_id);
CREATE TABLE hq_refunds (
  eid text PRIMARY KEY, sale_id text NOT NULL, hlc bigint NOT NULL, origin text NOT NULL,
  seq bigint NOT NULL, amount bigint NOT NULL, method text NOT NULL, restock boolean NOT NULL,
  reason text NOT NULL
);
CREATE INDEX hq_refunds_sale ON hq_refunds (sale_id);
CREATE TABLE hq_refund_lines (
  refund_id text NOT NULL, idx integer NOT NULL, line integer NOT NULL, qty bigint NOT NULL,
  amount bigint NOT NULL, PRIMARY KEY (refund_id, idx)
);
-- Receipts and adjustments (sale lines, void and refund restocks are in the views).
CREATE TABLE hq_stock_moves (
  eid text PRIMARY KEY, store text NOT NULL, sku text NOT NULL, hlc bigint NOT NULL,
  origin text NOT NULL, seq bigint NOT NULL, kind text NOT NULL, delta bigint NOT NULL
);
CREATE INDEX hq_stock_moves_stock ON hq_stock_moves (store, sku, hlc);
CREATE TABLE hq_stock_counts (
  eid text PRIMARY KEY, store text NOT NULL, sku text NOT NULL, hlc bigint NOT NULL,
  origin text NOT NULL, seq bigint NOT NULL, count bigint NOT NULL
);
CREATE TABLE hq_catalog_writes (
  eid text PRIMARY KEY, sku text NOT NULL, hlc bigint NOT NULL, origin text NOT NULL,
  seq bigint NOT NULL, kind text NOT NULL, name text, price bigint NOT NULL,
  tax_rate_bp integer, active boolean
);
CREATE INDEX hq_catalog_writes_sku ON hq_catalog_writes (sku);
CREATE TABLE hq_products (
  sku text PRIMARY KEY, name text NOT NULL, price bigint NOT NULL, tax_rate_bp integer NOT NULL,
  active boolean NOT NULL, product_eid text NOT NULL, price_eid text NOT NULL
);
-- A store's own price where it is in effect (its till's price.set won by the policy);
-- every other store sells at the chain price in hq_products.
CREATE TABLE hq_store_prices (
  store text NOT NULL, sku text NOT NULL, price bigint NOT NULL, price_eid text NOT NULL,
  PRIMARY KEY (sku, store)
);
CREATE TABLE hq_shift_events (
  eid text PRIMARY KEY, shift text NOT NULL, kind text NOT NULL, hlc bigint NOT NULL,
  origin text NOT NULL, seq bigint NOT NULL, amount bigint NOT NULL, cashier text NOT NULL
);
CREATE TABLE hq_resolutions (
  eid text PRIMARY KEY, conflict text NOT NULL, action text NOT NULL, by_ text NOT NULL,
  reason text NOT NULL, price bigint, hlc bigint NOT NULL, origin text NOT NULL,
  seq bigint NOT NULL
);

-- The earliest void of each sale (by hlc, origin, seq) is the one that restocks it.
CREATE VIEW hq_void_applied AS
  SELECT DISTINCT ON (sale_id) sale_id, eid AS void_eid, hlc
  FROM hq_voids ORDER BY sale_id, hlc, origin COLLATE "C", seq;
-- Every stock move with its cause: receipts and adjustments, sale lines, the restock of
-- a voided sale (in the sale's store, at its earliest void), refund restocks (in the
-- refund's store, of the sale line each refund line names).
CREATE VIEW hq_all_moves AS
  SELECT store, sku, hlc, eid, 0 AS line, delta FROM hq_stock_moves
  UNION ALL SELECT store, sku, hlc, sale_id, line, -qty FROM hq_sale_lines
  UNION ALL SELECT l.store, l.sku, v.hlc, v.void_eid, l.line, l.qty
    FROM hq_void_applied v JOIN hq_sale_lines l ON l.sale_id = v.sale_id
  UNION ALL SELECT split_part(r.origin, '/', 1), l.sku, r.hlc, r.eid, rl.idx, rl.qty
    FROM hq_refunds r JOIN hq_refund_lines rl ON rl.refund_id = r.eid
    JOIN hq_sale_lines l ON l.sale_id = r.sale_id AND l.line = rl.line
    WHERE r.restock;
-- The winning count of each (store, sku): the latest by (hlc, origin, seq).
CREATE VIEW hq_winning_counts AS
  SELECT DISTINCT ON (store, sku) store, sku, hlc, origin, seq, count
  FROM hq_stock_counts ORDER BY store, sku, hlc DESC, origin COLLATE "C" DESC, seq DESC;
-- On hand = the winning count + every move after its HLC (0 and -1 if never counted).
CREATE VIEW bi_stock_levels AS
  SELECT k.store, k.sku,
    (COALESCE(c.count, 0) + COALESCE((SELECT SUM(m.delta) FROM hq_all_moves m
       WHERE m.store = k.store AND m.sku = k.sku AND m.hlc > COALESCE(c.hlc, -1)), 0))::bigint
      AS on_hand
  FROM (SELECT store, sku FROM hq_all_moves UNION SELECT store, sku FROM hq_stock_counts) k
  LEFT JOIN hq_winning_counts c ON c.store = k.store AND c.sku = k.sku;
CREATE VIEW bi_sales AS
  SELECT s.id AS sale_id, s.store, s.origin AS till, s.seq,
    to_timestamp((s.hlc >> 16) / 1000.0) AS sold_at, s.receipt, s.total, s.change,
    s.shift, s.cashier,
    EXISTS (SELECT 1 FROM hq_voids v WHERE v.sale_id = s.id) AS voided,
    COALESCE((SELECT SUM(r.amount) FROM hq_refunds r WHERE r.sale_id = s.id), 0)::bigint
      AS refunded
  FROM hq_sales s;
CREATE VIEW bi_sale_lines AS
  SELECT l.sale_id, l.line, l.store, l.sku, l.qty, l.unit_price, l.discount, l.tax,
    l.qty * l.unit_price - l.discount AS line_total, to_timestamp((l.hlc >> 16) / 1000.0)
      AS sold_at
  FROM hq_sale_lines l;
CREATE VIEW bi_payments AS
  SELECT p.sale_id, p.idx, s.store, p.method, p.amount, p.last4, p.auth, p.reference,
    to_timestamp((s.hlc >> 16) / 1000.0) AS sold_at
  FROM hq_payments p JOIN hq_sales s ON s.id = p.sale_id;
CREATE VIEW bi_refunds AS
  SELECT r.eid AS refund_id, r.sale_id, split_part(r.origin, '/', 1) AS store,
    r.origin AS till, to_timestamp((r.hlc >> 16) / 1000.0) AS refunded_at, r.amount,
    r.method, r.restock, r.reason
  FROM hq_refunds r;
CREATE VIEW bi_voids AS
  SELECT v.eid AS void_id, v.sale_id, split_part(v.origin, '/', 1) AS store, v.origin AS till,
    to_timestamp((v.hlc >> 16) / 1000.0) AS voided_at, v.reason
  FROM hq_voids v;
CREATE VIEW bi_stock_moves AS
  SELECT m.store, m.sku, to_timestamp((m.hlc >> 16) / 1000.0) AS moved_at, m.eid AS cause,
    m.line, m.delta
  FROM hq_all_moves m;
CREATE VIEW bi_stock_counts AS
  SELECT c.eid AS count_id, c.store, c.sku, to_timestamp((c.hlc >> 16) / 1000.0) AS counted_at,
    c.origin AS till, c.count
  FROM hq_stock_counts c;
CREATE VIEW bi_catalog AS
  SELECT sku, name, price AS chain_price, tax_rate_bp, active FROM hq_products;
-- Each store override in effect beside the chain price it replaces there.
CREATE VIEW bi_store_prices AS
  SELECT p.sku, p.name, p.price AS chain_price, o.store, o.price AS store_price,
    o.price - p.price AS difference, o.price_eid AS set_by
  FROM hq_products p JOIN hq_store_prices o ON o.sku = p.sku;
-- A shift: its earliest open and latest close by (hlc, origin, seq).
CREATE VIEW bi_shifts AS
  WITH o AS (SELECT DISTINCT ON (shift) shift, eid, amount, cashier FROM hq_shift_events
             WHERE kind = 'open' ORDER BY shift, hlc, origin COLLATE "C", seq),
       c AS (SELECT DISTINCT ON (shift) shift, eid, amount FROM hq_shift_events
             WHERE kind = 'close' ORDER BY shift, hlc DESC, origin COLLATE "C" DESC, seq DESC)
  SELECT COALESCE(o.shift, c.shift) AS shift, o.eid AS opened_by, o.cashier,
    o.amount AS float_amount, c.eid AS closed_by, c.amount AS counted_cash
  FROM o FULL JOIN c ON c.shift = o.shift;
CREATE VIEW bi_resolutions AS
  SELECT eid, conflict, action, by_ AS by, reason, price, origin,
    to_timestamp((hlc >> 16) / 1000.0) AS resolved_at
  FROM hq_resolutions;
-- Per till: how far HQ holds its chain, and when its newest event was made and arrived.
CREATE VIEW bi_till_sync AS
  SELECT origin AS till, store, seq AS events_at_hq,
    to_timestamp((last_hlc >> 16) / 1000.0) AS last_event_at, updated_at AS last_ingest_at
  FROM hq_heads;
"""

# Tax (tillmesh schema 6): the sale's tax mode (NULL: a sale from before tills computed
# tax), each line's rate beside its tax, the tax each refund line gave back. An exclusive
# sale's total holds its tax from now on (as the SQLite fold's). No build before this one
# applied a schema-6 event (it stored them unapplied, FLAG_UNAPPLIED): the rows already
# here are exact with these defaults, and `PgLog.open` applies those stored events.
_V2 = f"""
ALTER TABLE hq_sales ADD COLUMN tax_mode text;
ALTER TABLE hq_refund_lines ADD COLUMN tax bigint NOT NULL DEFAULT 0;
CREATE INDEX hq_events_unapplied ON hq_events (origin, seq) WHERE flags & {FLAG_UNAPPLIED} <> 0;
CREATE OR REPLACE VIEW hq_sale_lines AS
  SELECT s.id AS sale_id, (j.n - 1)::int AS line, s.store, j.l ->> 'sku' AS sku,
    (j.l ->> 'qty')::int8 AS qty, (j.l ->> 'unit_price')::int8 AS unit_price,
    COALESCE((j.l ->> 'discount')::int8, 0) AS discount,
    COALESCE((j.l ->> 'tax')::int8, 0) AS tax, s.hlc,
    COALESCE((j.l ->> 'tax_rate_bp')::int4, 0) AS tax_rate_bp, s.tax_mode
  FROM hq_sales s, jsonb_array_elements(s.lines) WITH ORDINALITY AS j(l, n);
-- line_total: the goods less discount (before tax where prices exclude it); paid: what
-- the customer paid for the line (tax added where the sale's prices excluded it).
CREATE OR REPLACE VIEW bi_sale_lines AS
  SELECT l.sale_id, l.line, l.store, l.sku, l.qty, l.unit_price, l.discount, l.tax,
    l.qty * l.unit_price - l.discount AS line_total, to_timestamp((l.hlc >> 16) / 1000.0)
      AS sold_at, l.tax_rate_bp, l.tax_mode,
    l.qty * l.unit_price - l.discount
      + CASE WHEN l.tax_mode = 'exclusive' THEN l.tax ELSE 0 END AS paid
  FROM hq_sale_lines l;
CREATE OR REPLACE VIEW bi_sales AS
  SELECT s.id AS sale_id, s.store, s.origin AS till, s.seq,
    to_timestamp((s.hlc >> 16) / 1000.0) AS sold_at, s.receipt, s.total, s.change,
    s.shift, s.cashier,
    EXISTS (SELECT 1 FROM hq_voids v WHERE v.sale_id = s.id) AS voided,
    COALESCE((SELECT SUM(r.amount) FROM hq_refunds r WHERE r.sale_id = s.id), 0)::bigint
      AS refunded,
    s.tax_mode,
    COALESCE((SELECT SUM((l ->> 'tax')::int8) FROM jsonb_array_elements(s.lines) l), 0)::bigint
      AS tax
  FROM hq_sales s;
CREATE VIEW bi_refund_lines AS
  SELECT rl.refund_id, rl.idx, r.sale_id, rl.line, split_part(r.origin, '/', 1) AS store,
    rl.qty, rl.amount, rl.tax, to_timestamp((r.hlc >> 16) / 1000.0) AS refunded_at
  FROM hq_refund_lines rl JOIN hq_refunds r ON r.eid = rl.refund_id;
"""

# The tills' links as each ingest worker sees them, for HQ's dashboard (`links.py`):
# per origin the worker's sync status of it (held, behind, missing_for, last_seen).
_V3 = """
CREATE TABLE hq_links (
  origin text PRIMARY KEY, worker text NOT NULL, status jsonb NOT NULL,
  reported_at timestamptz NOT NULL DEFAULT now()
);
"""

# Card payments (tillmesh schema 7, fold 11): a payment's processor approval and manager
# override (elements 5 and 6 of its payments entry, only when set, as the SQLite fold
# keeps them), HQ's floor limits (card.limits_set) and the outcomes of deferred payments
# (card.captured / declined / expired), every one kept. `hq_card_status` picks the one in
# force as `st_card_status` does: captured over declined over expired, then the earliest
# by (hlc, origin, seq); NULL: outstanding. No build before this one applied a card event
# nor a schema-7 sale (stored unapplied): `PgLog.open` applies them.
_V4 = """
CREATE TABLE hq_card_limits (
  eid text PRIMARY KEY, store text NOT NULL, hlc bigint NOT NULL, origin text NOT NULL,
  seq bigint NOT NULL, per_payment bigint NOT NULL, till_total bigint NOT NULL,
  till_count bigint NOT NULL, max_age_s bigint NOT NULL
);
CREATE TABLE hq_card_outcomes (
  eid text PRIMARY KEY, payment text NOT NULL, kind text NOT NULL, hlc bigint NOT NULL,
  origin text NOT NULL, seq bigint NOT NULL, detail text NOT NULL
);
CREATE INDEX hq_card_outcomes_payment ON hq_card_outcomes (payment);
CREATE OR REPLACE VIEW hq_payments AS
  SELECT s.id AS sale_id, (j.n - 1)::int AS idx, j.p ->> 0 AS method,
    (j.p ->> 1)::int8 AS amount, j.p ->> 2 AS last4, j.p ->> 3 AS auth, j.p ->> 4 AS reference,
    NULLIF(j.p ->> 5, '') AS approval, NULLIF(j.p ->> 6, '') AS override_by
  FROM hq_sales s, jsonb_array_elements(s.payments) WITH ORDINALITY AS j(p, n);
CREATE VIEW hq_card_outcome_in_force AS
  SELECT DISTINCT ON (payment) payment, kind, eid, detail
  FROM hq_card_outcomes
  ORDER BY payment, CASE kind WHEN 'captured' THEN 0 WHEN 'declined' THEN 1 ELSE 2 END,
    hlc, origin COLLATE "C", seq;
-- Every deferred card payment and its outcome in force. The containment test skips the
-- sales with no deferred payment before their payments are expanded.
CREATE VIEW hq_card_status AS
  SELECT p.sale_id || '#' || p.idx AS payment, p.sale_id, p.idx, s.store, s.origin AS till,
    s.hlc, p.amount, s.receipt, s.cashier, p.override_by, o.kind AS outcome,
    o.eid AS outcome_eid, o.detail
  FROM hq_sales s JOIN hq_payments p ON p.sale_id = s.id
  LEFT JOIN hq_card_outcome_in_force o ON o.payment = p.sale_id || '#' || p.idx
  WHERE s.payments @> '[["deferred"]]' AND p.method = 'card' AND p.auth = 'deferred';
-- settlement: '' for cash and other, 'online' for a card the processor approved at the
-- sale, else what became of the deferred one (captured, declined, expired, outstanding).
CREATE OR REPLACE VIEW bi_payments AS
  SELECT p.sale_id, p.idx, s.store, p.method, p.amount, p.last4, p.auth, p.reference,
    to_timestamp((s.hlc >> 16) / 1000.0) AS sold_at, p.approval, p.override_by,
    CASE WHEN p.method <> 'card' THEN '' WHEN p.auth = 'online' THEN 'online'
      ELSE COALESCE(c.outcome, 'outstanding') END AS settlement
  FROM hq_payments p JOIN hq_sales s ON s.id = p.sale_id
  LEFT JOIN hq_card_status c ON c.sale_id = p.sale_id AND c.idx = p.idx;
CREATE VIEW bi_card_status AS
  SELECT payment, sale_id, store, till, to_timestamp((hlc >> 16) / 1000.0) AS sold_at,
    amount, receipt, cashier, override_by, COALESCE(outcome, 'outstanding') AS outcome,
    outcome_eid, detail,
    EXISTS (SELECT 1 FROM hq_voids v WHERE v.sale_id = c.sale_id) AS voided
  FROM hq_card_status c;
CREATE VIEW bi_card_limits AS
  SELECT eid, store, per_payment, till_total, till_count, max_age_s,
    to_timestamp((hlc >> 16) / 1000.0) AS set_at
  FROM hq_card_limits;
"""

# Resolutions' effects (fold 7; before this, stored but never read): what each
# `conflict.resolved` does if it is its conflict's effective one, the earliest by (hlc,
# origin) as `conflict.effects` picks it: stock moves and a count in the resolver's
# store, a price write (choose_price); and the catalog writes a `supersede` names, out
# of their SKU where its author may take them out (`conflict.catalog.may_supersede`:
# hq_products is recomputed without them). The resolutions stored before are flagged
# unapplied and their rows dropped, so each worker's open applies them again with
# their effects (`upgrade.py`), as it applies any event an older build did not read.
_V5 = f"""
CREATE TABLE hq_resolution_effects (
  eid text NOT NULL, idx integer NOT NULL, kind text NOT NULL, store text NOT NULL,
  sku text NOT NULL, n bigint NOT NULL, origin text NOT NULL, seq bigint NOT NULL,
  PRIMARY KEY (eid, idx)
);
CREATE TABLE hq_superseded (
  eid text NOT NULL, by_eid text NOT NULL, by_origin text NOT NULL, by_seq bigint NOT NULL,
  PRIMARY KEY (eid, by_eid)
);
CREATE INDEX hq_resolutions_conflict ON hq_resolutions (conflict);
CREATE VIEW hq_effective_resolutions AS
  SELECT DISTINCT ON (conflict) conflict, eid, hlc, origin, seq
  FROM hq_resolutions ORDER BY conflict, hlc, origin COLLATE "C";
CREATE VIEW hq_applied_effects AS
  SELECT e.eid, e.idx, e.kind, e.store, e.sku, e.n, w.hlc, w.origin, w.seq
  FROM hq_resolution_effects e JOIN hq_effective_resolutions w ON w.eid = e.eid;
CREATE OR REPLACE VIEW hq_all_moves AS
  SELECT store, sku, hlc, eid, 0 AS line, delta FROM hq_stock_moves
  UNION ALL SELECT store, sku, hlc, sale_id, line, -qty FROM hq_sale_lines
  UNION ALL SELECT l.store, l.sku, v.hlc, v.void_eid, l.line, l.qty
    FROM hq_void_applied v JOIN hq_sale_lines l ON l.sale_id = v.sale_id
  UNION ALL SELECT split_part(r.origin, '/', 1), l.sku, r.hlc, r.eid, rl.idx, rl.qty
    FROM hq_refunds r JOIN hq_refund_lines rl ON rl.refund_id = r.eid
    JOIN hq_sale_lines l ON l.sale_id = r.sale_id AND l.line = rl.line
    WHERE r.restock
  UNION ALL SELECT store, sku, hlc, eid, idx, n FROM hq_applied_effects WHERE kind = 'move';
-- Every count: the stock counts and the effective recounts' (in the resolver's store).
CREATE VIEW hq_all_counts AS
  SELECT eid, store, sku, hlc, origin, seq, count FROM hq_stock_counts
  UNION ALL SELECT eid, store, sku, hlc, origin, seq, n FROM hq_applied_effects
    WHERE kind = 'count';
CREATE OR REPLACE VIEW hq_winning_counts AS
  SELECT DISTINCT ON (store, sku) store, sku, hlc, origin, seq, count
  FROM hq_all_counts ORDER BY store, sku, hlc DESC, origin COLLATE "C" DESC, seq DESC;
CREATE OR REPLACE VIEW bi_stock_levels AS
  SELECT k.store, k.sku,
    (COALESCE(c.count, 0) + COALESCE((SELECT SUM(m.delta) FROM hq_all_moves m
       WHERE m.store = k.store AND m.sku = k.sku AND m.hlc > COALESCE(c.hlc, -1)), 0))::bigint
      AS on_hand
  FROM (SELECT store, sku FROM hq_all_moves UNION SELECT store, sku FROM hq_all_counts) k
  LEFT JOIN hq_winning_counts c ON c.store = k.store AND c.sku = k.sku;
CREATE OR REPLACE VIEW bi_stock_counts AS
  SELECT c.eid AS count_id, c.store, c.sku, to_timestamp((c.hlc >> 16) / 1000.0) AS counted_at,
    c.origin AS till, c.count
  FROM hq_all_counts c;
DELETE FROM hq_resolutions;
UPDATE hq_events SET flags = flags | {FLAG_UNAPPLIED}
  WHERE type = 'conflict.resolved' AND flags & {FLAG_REVOKED} = 0;
"""

# Key rotations (`rotation.py`): events signed by a key HQ has not vouched for yet, held
# until its `key.rotated` arrives (as the SQLite log's `unverified`). HQ's rotations are
# kept in hq_meta ('keys'), which every worker reads per batch.
_V6 = """
CREATE TABLE hq_unverified (
  origin text NOT NULL, seq bigint NOT NULL, hash bytea NOT NULL, raw bytea NOT NULL,
  PRIMARY KEY (origin, seq)
);
INSERT INTO hq_meta VALUES ('keys', '{}') ON CONFLICT (key) DO NOTHING;
"""

# The fold's conflicts as worker 0 last published them (`folded.py`), for BI tools and
# SQL: HQ's API reads the fold itself. `hq_conflicts_at` says of which state (digest) and
# when; a table, not a view, since the conflicts are the fold's, not SQL's.
_V7 = """
CREATE TABLE hq_conflicts (
  id text PRIMARY KEY, kind text NOT NULL, subject text NOT NULL, store text,
  open boolean NOT NULL, events jsonb NOT NULL, details jsonb NOT NULL, resolution jsonb
);
CREATE TABLE hq_conflicts_at (
  one integer PRIMARY KEY CHECK (one = 1), digest text NOT NULL,
  published_at timestamptz NOT NULL
);
CREATE VIEW bi_conflicts AS
  SELECT id, kind, subject, store, open, jsonb_array_length(events) AS events, details,
    resolution ->> 'action' AS action, resolution ->> 'by' AS decided_by,
    resolution ->> 'reason' AS reason, resolution ->> 'event' AS resolution_event
  FROM hq_conflicts;
"""

# Each origin's `log.signed` checkpoint (`core.keys`), as the SQLite log's meta
# 'checkpoints': from it on that origin's unsigned events are refused. A row per origin,
# written by the worker that owns it (no shared blob to merge); those stored before are
# found once, here, among the events (the first one folded, as the SQLite log took it).
_V8 = f"""
CREATE TABLE hq_checkpoints (origin text PRIMARY KEY, seq bigint NOT NULL);
INSERT INTO hq_checkpoints
  SELECT origin, min(seq) FROM hq_events
  WHERE type = 'log.signed' AND flags & {FLAG_REVOKED | FLAG_UNAPPLIED} = 0 GROUP BY origin;
"""

MIGRATIONS: tuple[str, ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[Any], where: str) -> int:
    """Bring the database to SCHEMA_VERSION; returns the version it was at."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS hq_schema (version integer NOT NULL)")
        row = conn.execute("SELECT version FROM hq_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO hq_schema VALUES (0)")
        was = int(row[0]) if row else 0
        if was > SCHEMA_VERSION:
            raise SchemaTooNew(where, was, SCHEMA_VERSION)
        for version in range(was + 1, SCHEMA_VERSION + 1):
            conn.execute(MIGRATIONS[version - 1].encode())
            conn.execute("UPDATE hq_schema SET version = %s", (version,))
    return was
