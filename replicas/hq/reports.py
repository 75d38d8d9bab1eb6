"""`tillmesh report` and `/reports/*` on HQ's PostgreSQL read model.

The same figures as `conflict.reports` gives on a SQLite log, by the same conventions
(see there): a sale counts in its origin's store at its HLC wall time in the report's
time zone; voided = totals of sales with any void; refunded = refunds of known,
non-voided sales; net = gross - voided - refunded. Rows come back in the same order:
text is compared bytewise (COLLATE "C"), as SQLite does, whatever the database's locale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from conflict.cards import DEFAULT_LIMITS, CardLimits
from conflict.conflicts import conflict_id
from conflict.errors import ReportError
from conflict.reports import Window
from core.clock import COUNTER_BITS

__all__ = [
    "card_limits",
    "catalog",
    "declines_report",
    "deferred_cards",
    "items_report",
    "offline_exposure",
    "payments_report",
    "prices_report",
    "sales_report",
    "sales_totals",
    "shift_totals",
    "stock_report",
    "tax_report",
]

Record = dict[str, Any]
Conn = psycopg.Connection[Any]


def _where(window: Window) -> tuple[str, list[Any]]:
    where = "s.hlc >= %s AND s.hlc < %s"
    params: list[Any] = [window.since, window.until]
    if window.store is not None:
        where += " AND s.store = %s"
        params.append(window.store)
    return where, params


def _local(window: Window) -> str:
    """The sale's local wall time as a timestamp (whole seconds, as SQLite's unixepoch)."""
    secs = f"((s.hlc >> {COUNTER_BITS}) / 1000 + {int(window.utc_offset_min) * 60})"
    return f"(timestamp '1970-01-01' + {secs} * interval '1 second')"


def _group_exprs(window: Window) -> dict[str, str]:
    local = _local(window)
    return {
        "store": 's.store COLLATE "C"',
        "till": 's.origin COLLATE "C"',
        "day": f"to_char({local}, 'YYYY-MM-DD')",
        "hour": f"to_char({local}, 'YYYY-MM-DD HH24:00')",
        "shift": 's.shift COLLATE "C"',
        "cashier": 's.cashier COLLATE "C"',
    }


def _records(cur: psycopg.Cursor[Any]) -> list[Record]:
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


_SALES = """
SELECT {keys}, COUNT(*)::int8 AS sales, SUM(s.total)::int8 AS gross,
  SUM(CASE WHEN v.sale_id IS NULL THEN 0 ELSE s.total END)::int8 AS voided,
  SUM(CASE WHEN v.sale_id IS NULL THEN COALESCE(r.amount, 0) ELSE 0 END)::int8 AS refunded
FROM hq_sales s
LEFT JOIN (SELECT DISTINCT sale_id FROM hq_voids) v ON v.sale_id = s.id
LEFT JOIN (SELECT sale_id, SUM(amount) AS amount FROM hq_refunds GROUP BY sale_id) r
  ON r.sale_id = s.id
WHERE {where}
GROUP BY {group} ORDER BY {group}
"""


def sales_report(conn: Conn, by: Sequence[str], window: Window) -> list[Record]:
    exprs = _group_exprs(window)
    unknown = [b for b in by if b not in exprs]
    if unknown or not by:
        raise ReportError("grouping", ",".join(unknown or by), f"use {', '.join(exprs)}")
    keys = ", ".join(f"{exprs[b]} AS {b}" for b in by)
    group = ", ".join(str(i + 1) for i in range(len(by)))
    where, params = _where(window)
    sql = _SALES.format(keys=keys, where=where, group=group)
    rows = _records(conn.execute(sql.encode(), params))
    for row in rows:
        row["net"] = row["gross"] - row["voided"] - row["refunded"]
    return rows


_PAYMENTS = """
SELECT s.store COLLATE "C" AS store, p.method COLLATE "C" AS method,
  COALESCE(p.auth, '') COLLATE "C" AS auth,
  CASE WHEN p.method <> 'card' THEN '' WHEN p.auth = 'online' THEN 'online'
    ELSE COALESCE(c.outcome, 'outstanding') END COLLATE "C" AS settlement,
  COUNT(*)::int8 AS payments, SUM(p.amount)::int8 AS amount
FROM hq_sales s JOIN hq_payments p ON p.sale_id = s.id
LEFT JOIN hq_card_status c ON c.sale_id = p.sale_id AND c.idx = p.idx
WHERE {where} AND s.id NOT IN (SELECT sale_id FROM hq_voids)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""

_CHANGE = """
SELECT s.store, SUM(s.change)::int8 FROM hq_sales s
WHERE {where} AND s.change > 0 AND s.id NOT IN (SELECT sale_id FROM hq_voids)
GROUP BY 1
"""


def payments_report(conn: Conn, window: Window) -> list[Record]:
    where, params = _where(window)
    rows = _records(conn.execute(_PAYMENTS.format(where=where).encode(), params))
    change = dict(conn.execute(_CHANGE.format(where=where).encode(), params).fetchall())
    for row in rows:
        row["change_given"] = change.get(row["store"], 0) if row["method"] == "cash" else 0
        row["kept"] = row["amount"] - row["change_given"]
    return rows


_ITEMS = """
SELECT store, sku, qty, revenue, sales FROM (
  SELECT l.store AS store, l.sku AS sku, SUM(l.qty)::int8 AS qty,
    SUM(l.qty * l.unit_price - l.discount)::int8 AS revenue,
    COUNT(DISTINCT l.sale_id)::int8 AS sales,
    ROW_NUMBER() OVER (PARTITION BY l.store
                       ORDER BY SUM(l.qty * l.unit_price - l.discount) DESC,
                                l.sku COLLATE "C") AS rank
  FROM hq_sales s JOIN hq_sale_lines l ON l.sale_id = s.id
  WHERE {where} AND s.id NOT IN (SELECT sale_id FROM hq_voids)
  GROUP BY l.store, l.sku) ranked
WHERE rank <= %s ORDER BY store COLLATE "C", rank
"""


def items_report(conn: Conn, window: Window, top: int = 20) -> list[Record]:
    where, params = _where(window)
    return _records(conn.execute(_ITEMS.format(where=where).encode(), [*params, top]))


_TAX = """
SELECT s.store COLLATE "C" AS store, to_char({local}, 'YYYY-MM-DD') AS day,
  CASE WHEN s.tax_mode IS NULL THEN NULL ELSE l.tax_rate_bp END AS rate_bp,
  COUNT(*)::int8 AS lines,
  SUM(l.qty * l.unit_price - l.discount
      + CASE WHEN s.tax_mode = 'exclusive' THEN l.tax ELSE 0 END)::int8 AS gross,
  SUM(l.tax)::int8 AS tax, SUM(COALESCE(back.tax, 0))::int8 AS refunded_tax
FROM hq_sales s JOIN hq_sale_lines l ON l.sale_id = s.id
LEFT JOIN (SELECT r.sale_id, rl.line, SUM(rl.tax) AS tax
           FROM hq_refunds r JOIN hq_refund_lines rl ON rl.refund_id = r.eid
           GROUP BY 1, 2) back ON back.sale_id = s.id AND back.line = l.line
WHERE {where} AND s.id NOT IN (SELECT sale_id FROM hq_voids)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 NULLS FIRST
"""


def tax_report(conn: Conn, window: Window) -> list[Record]:
    """Tax per store, day and rate (None: not recorded, first as SQLite sorts it) of
    non-voided sales, less what refunds gave back: `conflict.reports.tax_report`."""
    where, params = _where(window)
    sql = _TAX.format(local=_local(window), where=where)
    rows = _records(conn.execute(sql.encode(), params))
    for row in rows:
        row["net_tax"] = row["tax"] - row["refunded_tax"]
    return rows


def stock_report(conn: Conn, store: str | None = None, below: int | None = None) -> list[Record]:
    clauses: list[str] = []
    params: list[object] = []
    if store is not None:
        clauses.append("store = %s")
        params.append(store)
    if below is not None:
        clauses.append("on_hand < %s")
        params.append(below)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = (
        'SELECT store COLLATE "C" AS store, sku COLLATE "C" AS sku, on_hand'
        f" FROM bi_stock_levels {where} ORDER BY 1, 2"
    )
    return _records(conn.execute(sql.encode(), params))


_EXPOSURE = """
SELECT c.store COLLATE "C" AS store, c.till COLLATE "C" AS till, COUNT(*)::int8 AS payments,
  SUM(c.amount)::int8 AS amount, MIN(c.hlc)::int8 AS oldest_hlc
FROM hq_card_status c
WHERE c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM hq_voids) {where}
GROUP BY 1, 2 ORDER BY 1, 2
"""


def offline_exposure(
    conn: Conn, store: str | None = None, now_ms: int | None = None
) -> list[Record]:
    """Deferred card payments not yet captured, declined or expired, per store and till:
    how many, how much, the oldest one's HLC and, given `now_ms`, its age in seconds
    (`conflict.reports.offline_exposure`). Voided sales are not counted."""
    where, params = ("AND c.store = %s", [store]) if store is not None else ("", [])
    rows = _records(conn.execute(_EXPOSURE.format(where=where).encode(), params))
    for row in rows:
        if now_ms is not None:
            row["oldest_age_s"] = max(0, (now_ms - (row["oldest_hlc"] >> COUNTER_BITS)) // 1000)
    return rows


_DEFERRED = """
SELECT c.store COLLATE "C" AS store, c.till COLLATE "C" AS till, COUNT(*)::int8 AS payments,
  SUM(c.amount)::int8 AS amount
FROM hq_card_status c JOIN hq_sales s ON s.id = c.sale_id
WHERE {where} AND c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM hq_voids)
GROUP BY 1, 2 ORDER BY 1, 2
"""


def deferred_cards(conn: Conn, window: Window | None = None) -> list[Record]:
    """Per store and till, deferred card payments of non-voided sales of the window not
    yet captured, declined or expired (`offline_exposure`, by sales window)."""
    where, params = _where(window or Window())
    return _records(conn.execute(_DEFERRED.format(where=where).encode(), params))


_DECLINED = """
SELECT c.payment, c.sale_id, c.store, c.outcome, c.amount FROM hq_card_status c
WHERE c.outcome IN ('declined', 'expired') AND c.sale_id NOT IN (SELECT sale_id FROM hq_voids)
  {where}
"""
# The effective resolution of each conflict: the earliest by (hlc, origin), as
# `conflict.detect` takes it.
_DECISIONS = """
SELECT DISTINCT ON (conflict) conflict, action FROM hq_resolutions
WHERE conflict = ANY(%s) ORDER BY conflict, hlc, origin COLLATE "C"
"""


def declines_report(conn: Conn, store: str | None = None) -> list[Record]:
    """Offline card payments declined or expired, per store, outcome and the manager's
    decision (`open` until a resolution of its `card_declined` conflict), as
    `conflict.reports.declines_report`: the conflict ids are `conflict.detect`'s."""
    where, params = ("AND c.store = %s", [store]) if store is not None else ("", [])
    found = conn.execute(_DECLINED.format(where=where).encode(), params).fetchall()
    ids = {str(pid): conflict_id("card_declined", str(pid), [str(sale)]) for pid, sale, *_ in found}
    decided = dict(conn.execute(_DECISIONS.encode(), (list(ids.values()),)).fetchall())
    groups: dict[tuple[str, str, str], list[int]] = {}
    for pid, _, where_, outcome, amount in found:
        key = (str(where_), str(outcome), str(decided.get(ids[str(pid)], "open")))
        acc = groups.setdefault(key, [0, 0])
        acc[0] += 1
        acc[1] += int(amount)
    return [
        {"store": k[0], "outcome": k[1], "decision": k[2], "payments": n, "amount": a}
        for k, (n, a) in sorted(groups.items())
    ]


_LIMITS = """
SELECT per_payment, till_total, till_count, max_age_s FROM hq_card_limits
WHERE store IN (%s, '')
ORDER BY store = %s DESC, hlc DESC, origin COLLATE "C" DESC, seq DESC LIMIT 1
"""


def card_limits(conn: Conn, store: str) -> CardLimits:
    """The floor limits in force for `store` (`conflict.cards.card_limits`)."""
    row = conn.execute(_LIMITS.encode(), (store, store)).fetchone()
    return DEFAULT_LIMITS if row is None else CardLimits(*(int(v) for v in row))


_PRICES = """
SELECT p.sku COLLATE "C" AS sku, p.name, p.price AS chain_price, o.store COLLATE "C" AS store,
  o.price AS store_price, o.price - p.price AS difference, o.price_eid AS set_by
FROM hq_products p JOIN hq_store_prices o ON o.sku = p.sku {where}
ORDER BY 1, 4
"""


def prices_report(conn: Conn, store: str | None = None) -> list[Record]:
    """Each store override in effect beside the chain price it replaces there."""
    where, params = ("WHERE o.store = %s", [store]) if store is not None else ("", [])
    return _records(conn.execute(_PRICES.format(where=where).encode(), params))


def catalog(conn: Conn, sku: str | None = None) -> list[Record]:
    """The chain's view of the catalog (as HQ's `queries.catalog`): each product at the
    chain price, with every store override in effect apart."""
    where, params = ("WHERE sku = %s", [sku]) if sku is not None else ("", [])
    rows = _records(conn.execute(
        f'SELECT sku, name, price, tax_rate_bp, active FROM hq_products {where}'
        ' ORDER BY sku COLLATE "C"'.encode(), params,
    ))  # fmt: skip
    overrides: dict[str, dict[str, int]] = {}
    for s, store, price in conn.execute(
        'SELECT sku, store, price FROM hq_store_prices ORDER BY sku, store COLLATE "C"'
    ).fetchall():
        overrides.setdefault(s, {})[store] = int(price)
    return [
        {**r, "chain_price": r["price"], "overrides": overrides.get(r["sku"], {})} for r in rows
    ]


_SHIFT_SALES = """
SELECT COUNT(*)::int8, COALESCE(SUM(s.total), 0)::int8,
  COALESCE(SUM(s.total) FILTER (WHERE s.id IN (SELECT sale_id FROM hq_voids)), 0)::int8
FROM hq_sales s WHERE s.shift = %(shift)s
"""
_SHIFT_MONEY = """
WITH kept AS (SELECT s.id, s.change FROM hq_sales s WHERE s.shift = %(shift)s
              AND s.id NOT IN (SELECT sale_id FROM hq_voids))
SELECT
  (SELECT COALESCE(SUM(r.amount), 0)::int8 FROM hq_refunds r JOIN kept ON kept.id = r.sale_id),
  (SELECT COALESCE(SUM(p.amount), 0)::int8 FROM hq_payments p JOIN kept ON kept.id = p.sale_id
   WHERE p.method = 'cash') - (SELECT COALESCE(SUM(change), 0)::int8 FROM kept),
  (SELECT COALESCE(SUM(r.amount), 0)::int8 FROM hq_refunds r JOIN kept ON kept.id = r.sale_id
   WHERE r.method = 'cash'),
  (SELECT COALESCE(SUM(l.tax), 0)::int8 FROM hq_sale_lines l JOIN kept ON kept.id = l.sale_id)
  - (SELECT COALESCE(SUM(rl.tax), 0)::int8 FROM hq_refunds r JOIN kept ON kept.id = r.sale_id
     JOIN hq_refund_lines rl ON rl.refund_id = r.eid)
"""


def shift_totals(conn: Conn, shift: str) -> Record:
    """A shift's sales and cash drawer, as `conflict.queries.shift_totals` (the earliest
    open and latest close win; voided sales count for nothing, refunds against their
    sale's shift)."""
    arg = {"shift": shift}
    sales, gross, voided = _one(conn, _SHIFT_SALES, arg)
    refunded, taken, cash_refunds, tax = _one(conn, _SHIFT_MONEY, arg)
    found = conn.execute(
        "SELECT opened_by, cashier, float_amount, closed_by, counted_cash FROM bi_shifts"
        " WHERE shift = %s", (shift,),
    ).fetchone()  # fmt: skip
    opened_by, cashier, float_amount, closed_by, counted = found or (None,) * 5
    expected = (float_amount or 0) + taken - cash_refunds
    return {
        "shift": shift, "sales": sales, "gross": gross, "voided": voided,
        "refunded": refunded, "net": gross - voided - refunded,
        "opened_by": opened_by, "cashier": cashier, "float": float_amount or 0,
        "cash_taken": taken, "cash_refunded": cash_refunds, "expected_cash": expected,
        "closed_by": closed_by, "counted_cash": counted,
        "over_short": None if counted is None else counted - expected, "tax": tax,
    }  # fmt: skip


def sales_totals(conn: Conn) -> dict[str, int]:
    """Every sale HQ holds: count, gross, voided, refunded (not of voided sales), net."""
    sales, gross, voided, refunded = (int(v) for v in _one(conn, _SALES_TOTALS, {}))
    net = gross - voided - refunded
    return {"sales": sales, "gross": gross, "voided": voided, "refunded": refunded, "net": net}


_SALES_TOTALS = """
SELECT COUNT(*)::int8, COALESCE(SUM(total), 0)::int8,
       COALESCE(SUM(total) FILTER (WHERE id IN (SELECT sale_id FROM hq_voids)), 0)::int8,
       (SELECT COALESCE(SUM(r.amount), 0)::int8 FROM hq_refunds r JOIN hq_sales s
          ON s.id = r.sale_id WHERE r.sale_id NOT IN (SELECT sale_id FROM hq_voids))
  FROM hq_sales
"""


def _one(conn: Conn, query: str, args: dict[str, Any]) -> tuple[Any, ...]:
    row = conn.execute(query.encode(), args).fetchone()
    assert row is not None  # aggregates without GROUP BY: always one row
    return tuple(row)
