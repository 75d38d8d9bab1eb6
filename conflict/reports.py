"""Reports for HQ analysts and store managers: grouped figures over the state tables.

Plain read queries, like `queries.py`, on any replica's state (HQ's holds every store).
Money is int minor units. The conventions are `queries.sales_summary`'s, so a report's
totals add up to the summary's:

- a sale counts where and when it was made (its origin's store, its HLC wall time in
  the report's time zone); its voids and refunds count against it, not on their own day;
- voided: totals of sales with any void; refunded: refunds of known, non-voided sales;
  net = gross - voided - refunded.

`tax` states the tax the tills recorded in each sale line (computed from the catalog's
rate at the sale) less what refunds gave back, per store, day and rate; sales made
before tills computed tax (schema 6) show as rate None, tax 0: not recorded.

`payments` shows how the money of non-voided sales was taken. Card payments authorised
"deferred" were taken offline (store-and-forward under the floor limit): until the
acquirer accepts them, the merchant carries the risk of a decline, so they are apart,
split by what became of them (`settlement`: captured, declined, expired, or outstanding;
'online' for cards the processor approved at the sale). `offline_exposure` is what is
still outstanding, per store and till, with the oldest one's time; `deferred_cards`
the same per till in a sales window (the dashboard's and metrics' "deferred card
exposure").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from conflict.detect import detect
from conflict.errors import ReportError
from conflict.policies import from_state
from conflict.stock import store_sql
from core.clock import COUNTER_BITS, pack

__all__ = [
    "SALES_GROUPS",
    "Window",
    "declines_report",
    "deferred_cards",
    "items_report",
    "offline_exposure",
    "payments_report",
    "sales_report",
    "stock_report",
    "tax_report",
]

Record = dict[str, Any]
_MAX_HLC = (1 << 63) - 1


@dataclass(frozen=True)
class Window:
    """Which sales a report reads: HLCs in [since, until), one store or all, and the
    offset from UTC in minutes that days and hours are cut in."""

    since: int = 0
    until: int = _MAX_HLC
    store: str | None = None
    utc_offset_min: int = 0

    @classmethod
    def between(
        cls,
        since: datetime | None,
        until: datetime | None,
        store: str | None = None,
        utc_offset_min: int = 0,
    ) -> Window:
        """From wall times; a naive one is read in the report's time zone."""
        zone = timezone(timedelta(minutes=utc_offset_min))
        lo = _hlc_at(since, zone) if since else 0
        hi = _hlc_at(until, zone) if until else _MAX_HLC
        if lo >= hi:
            raise ReportError("window", f"{since}..{until}", "since must be before until")
        return cls(lo, hi, store, utc_offset_min)

    def where(self, sale: str = "s") -> tuple[str, list[Any]]:
        sql = f"{sale}.hlc >= ? AND {sale}.hlc < ?"
        params: list[Any] = [self.since, self.until]
        if self.store is not None:
            sql += f" AND {store_sql(f'{sale}.origin')} = ?"
            params.append(self.store)
        return sql, params

    def local_time(self, sale: str = "s") -> str:
        """SQL: the sale's wall time in seconds since the epoch, shifted to local time."""
        return f"(({sale}.hlc >> {COUNTER_BITS}) / 1000 + {self.utc_offset_min * 60})"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _hlc_at(moment: datetime, zone: timezone) -> int:
    """The smallest HLC at `moment`, clamped to what an HLC can hold (a year 9000 bound
    overflowed SQLite's 64-bit integers; a time before 1970 holds no event anyway)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    ms = (moment - _EPOCH) // timedelta(milliseconds=1)  # exact, unlike float timestamps
    return pack(min(max(ms, 0), _MAX_HLC >> COUNTER_BITS), 0)


def _group_exprs(window: Window) -> dict[str, str]:
    local = window.local_time()
    return {
        "store": store_sql("s.origin"),
        "till": "s.origin",
        "day": f"date({local}, 'unixepoch')",
        "hour": f"strftime('%Y-%m-%d %H:00', {local}, 'unixepoch')",
        "shift": "s.shift",
        "cashier": "s.cashier",
    }


SALES_GROUPS = tuple(_group_exprs(Window()))

_SALES = """
SELECT {keys}, COUNT(*) AS sales, SUM(s.total) AS gross,
  SUM(CASE WHEN v.sale_id IS NULL THEN 0 ELSE s.total END) AS voided,
  SUM(CASE WHEN v.sale_id IS NULL THEN COALESCE(r.amount, 0) ELSE 0 END) AS refunded
FROM st_sales s
LEFT JOIN (SELECT DISTINCT sale_id FROM st_voids) v ON v.sale_id = s.id
LEFT JOIN (SELECT sale_id, SUM(amount) AS amount FROM st_refunds GROUP BY sale_id) r
  ON r.sale_id = s.id
WHERE {where}
GROUP BY {group} ORDER BY {group}
"""


def _keys(by: Sequence[str], window: Window) -> tuple[str, str]:
    exprs = _group_exprs(window)
    unknown = [b for b in by if b not in exprs]
    if unknown or not by:
        raise ReportError("grouping", ",".join(unknown or by), f"use {', '.join(exprs)}")
    keys = ", ".join(f"{exprs[b]} AS {b}" for b in by)
    return keys, ", ".join(str(i + 1) for i in range(len(by)))


def _records(cur: sqlite3.Cursor) -> list[Record]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def sales_report(conn: sqlite3.Connection, by: Sequence[str], window: Window) -> list[Record]:
    """Sales, gross, voided, refunded and net per group (e.g. by store and day)."""
    keys, group = _keys(by, window)
    where, params = window.where()
    rows = _records(conn.execute(_SALES.format(keys=keys, where=where, group=group), params))
    for row in rows:
        row["net"] = row["gross"] - row["voided"] - row["refunded"]
    return rows


_PAYMENTS = """
SELECT {store} AS store, p.method AS method, COALESCE(p.auth, '') AS auth,
  CASE WHEN p.method != 'card' THEN '' WHEN p.auth = 'online' THEN 'online'
    ELSE COALESCE(c.outcome, 'outstanding') END AS settlement,
  COUNT(*) AS payments, SUM(p.amount) AS amount
FROM st_sales s JOIN st_payments p ON p.sale_id = s.id
LEFT JOIN st_card_status c ON c.sale_id = p.sale_id AND c.idx = p.idx
WHERE {where} AND s.id NOT IN (SELECT sale_id FROM st_voids)
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""


_CHANGE = """
SELECT {store} AS store, SUM(s.change) FROM st_sales s
WHERE {where} AND s.change > 0 AND s.id NOT IN (SELECT sale_id FROM st_voids)
GROUP BY 1
"""


def payments_report(conn: sqlite3.Connection, window: Window) -> list[Record]:
    """Payments of non-voided sales per store, method, authorisation (online or
    deferred, for cards) and settlement (see the module doc). `kept` is what stays with
    the store: for cash, the amount tendered less the change handed back (always cash)."""
    where, params = window.where()
    store = store_sql("s.origin")
    rows = _records(conn.execute(_PAYMENTS.format(store=store, where=where), params))
    change = dict(conn.execute(_CHANGE.format(store=store, where=where), params).fetchall())
    for row in rows:
        row["change_given"] = change.get(row["store"], 0) if row["method"] == "cash" else 0
        row["kept"] = row["amount"] - row["change_given"]
    return rows


_EXPOSURE = """
SELECT c.store AS store, c.till AS till, COUNT(*) AS payments, SUM(c.amount) AS amount,
  MIN(c.hlc) AS oldest_hlc
FROM st_card_status c
WHERE c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM st_voids) {where}
GROUP BY 1, 2 ORDER BY 1, 2
"""


def offline_exposure(
    conn: sqlite3.Connection, store: str | None = None, now_ms: int | None = None
) -> list[Record]:
    """Deferred card payments not yet captured, declined or expired (the risk the
    merchant carries), per store and till: how many, how much, the oldest one's HLC and,
    given `now_ms`, its age in seconds. Voided sales are not counted (never forwarded)."""
    where, params = ("AND c.store = ?", [store]) if store is not None else ("", [])
    rows = _records(conn.execute(_EXPOSURE.format(where=where), params))
    for row in rows:
        if now_ms is not None:
            row["oldest_age_s"] = max(0, (now_ms - (row["oldest_hlc"] >> COUNTER_BITS)) // 1000)
    return rows


_DEFERRED = """
SELECT c.store AS store, c.till AS till, COUNT(*) AS payments, SUM(c.amount) AS amount
FROM st_card_status c JOIN st_sales s ON s.id = c.sale_id
WHERE {where} AND c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM st_voids)
GROUP BY 1, 2 ORDER BY 1, 2
"""


def deferred_cards(conn: sqlite3.Connection, window: Window = Window()) -> list[Record]:
    """Per store and till, card payments authorised `deferred` on non-voided sales of
    the window that are not yet captured, declined or expired: the money that waits on
    the acquirer (`offline_exposure`, by sales window)."""
    where, params = window.where()
    return _records(conn.execute(_DEFERRED.format(where=where), params))


def declines_report(conn: sqlite3.Connection, store: str | None = None) -> list[Record]:
    """Offline card payments the processor declined or that expired, per store, outcome
    and what the manager decided (`open` until a resolution: paid_other_way,
    written_off, refund_reversed): how many and how much."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for c in detect(conn, from_state(conn), kinds=["card_declined"]):
        where = str(c.details["store"])
        if store is not None and where != store:
            continue
        decided = c.resolution.action if c.resolution is not None else "open"
        acc = groups.setdefault((where, str(c.details["outcome"]), decided), [0, 0])
        acc[0] += 1
        acc[1] += int(c.details["amount"])
    return [
        {"store": k[0], "outcome": k[1], "decision": k[2], "payments": n, "amount": a}
        for k, (n, a) in sorted(groups.items())
    ]


_ITEMS = """
SELECT store, sku, qty, revenue, sales FROM (
  SELECT l.store AS store, l.sku AS sku, SUM(l.qty) AS qty,
    SUM(l.qty * l.unit_price - l.discount) AS revenue, COUNT(DISTINCT l.sale_id) AS sales,
    ROW_NUMBER() OVER (PARTITION BY l.store
                       ORDER BY SUM(l.qty * l.unit_price - l.discount) DESC, l.sku) AS rank
  FROM st_sales s JOIN st_sale_lines l ON l.sale_id = s.id
  WHERE {where} AND s.id NOT IN (SELECT sale_id FROM st_voids)
  GROUP BY 1, 2)
WHERE rank <= ? ORDER BY store, rank
"""


def items_report(conn: sqlite3.Connection, window: Window, top: int = 20) -> list[Record]:
    """Each store's `top` best-selling SKUs by revenue (non-voided sales, before refunds)."""
    where, params = window.where()
    return _records(conn.execute(_ITEMS.format(where=where), [*params, top]))


def stock_report(
    conn: sqlite3.Connection, store: str | None = None, below: int | None = None
) -> list[Record]:
    """On hand per store and SKU; `below`: only SKUs with fewer than that many."""
    clauses: list[str] = []
    params: list[object] = []
    if store is not None:
        clauses.append("store = ?")
        params.append(store)
    if below is not None:
        clauses.append("on_hand < ?")
        params.append(below)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT store, sku, on_hand FROM st_stock_levels {where} ORDER BY store, sku"
    return _records(conn.execute(sql, params))


_PRICES = """
SELECT p.sku, p.name, p.price AS chain_price, o.store, o.price AS store_price,
  o.price - p.price AS difference, o.price_eid AS set_by
FROM st_products p JOIN st_store_prices o ON o.sku = p.sku {where}
ORDER BY p.sku, o.store
"""


def prices_report(conn: sqlite3.Connection, store: str | None = None) -> list[Record]:
    """Each store override in effect beside the chain price it replaces there (a store
    not listed for a SKU sells it at the chain price): sku, name, chain_price, store,
    store_price, difference, set_by (the event that set it)."""
    where, params = ("WHERE o.store = ?", [store]) if store is not None else ("", [])
    return _records(conn.execute(_PRICES.format(where=where), params))


_TAX = """
SELECT {store} AS store, date({local}, 'unixepoch') AS day,
  CASE WHEN s.tax_mode IS NULL THEN NULL ELSE l.tax_rate_bp END AS rate_bp,
  COUNT(*) AS lines,
  SUM(l.qty * l.unit_price - l.discount
      + CASE WHEN s.tax_mode = 'exclusive' THEN l.tax ELSE 0 END) AS gross,
  SUM(l.tax) AS tax, SUM(COALESCE(back.tax, 0)) AS refunded_tax
FROM st_sales s JOIN st_sale_lines l ON l.sale_id = s.id
LEFT JOIN (SELECT r.sale_id AS sale_id, rl.line AS line, SUM(rl.tax) AS tax
           FROM st_refunds r JOIN st_refund_lines rl ON rl.refund_id = r.eid
           GROUP BY 1, 2) back ON back.sale_id = s.id AND back.line = l.line
WHERE {where} AND s.id NOT IN (SELECT sale_id FROM st_voids)
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


def tax_report(conn: sqlite3.Connection, window: Window) -> list[Record]:
    """Tax per store, day and rate (basis points; None: not recorded) of non-voided
    sales: `gross` what customers paid for those lines, `tax` the tax in it,
    `refunded_tax` what refunds gave back, `net_tax` = tax - refunded_tax."""
    where, params = window.where()
    sql = _TAX.format(store=store_sql("s.origin"), local=window.local_time(), where=where)
    rows = _records(conn.execute(sql, params))
    for row in rows:
        row["net_tax"] = row["tax"] - row["refunded_tax"]
    return rows
