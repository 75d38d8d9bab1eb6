"""Read side of the store state: plain functions over a `sqlite3.Connection`.

Everything here derives from the `st_` tables by query, so "voided", "refunded" and
shift totals can never be stale or depend on arrival order. `state_digest` is a hash of
the whole derived state as sets of rows: two replicas holding the same set of events
have the same digest (the convergence law the tests check).

Conventions for the money figures (all int minor units):
- a sale is voided if any void names it; its total counts in `voided`, not in `net`;
- `refunded` sums refunds of known, non-voided sales (a refund of a voided or unknown
  sale is a conflict for `detect`, not money to subtract twice);
- net = gross - voided - refunded.

Stock is kept per store (`stock.stock_store` of the event that moves it): a till's
state holds its own store's stock (and HQ's own, if HQ received or adjusted any), HQ's
every store's. `stock_levels(conn, store=s)` is one store's; without `store` it sums the
stores the state holds (on a till: its store, as before stock had a store).
`stock_by_store` gives each store's levels apart, for HQ's reports.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any, NamedTuple

from conflict.schema import DIGEST_WHERE, DIGESTED
from core import digest

__all__ = [
    "SalesSummary",
    "catalog",
    "product",
    "sale",
    "sale_by_receipt",
    "sales_summary",
    "shift_totals",
    "state_digest",
    "state_snapshot",
    "stock_by_store",
    "stock_levels",
]

Record = dict[str, Any]

_PRODUCT = "SELECT sku, name, price, tax_rate_bp, active FROM st_products"
_SALE = (
    "SELECT s.id, s.origin, s.seq, s.hlc, s.receipt, s.total, s.change, s.shift, s.cashier,"
    " s.tax_mode, st.voided, st.refunded"
    " FROM st_sales s JOIN st_sale_status st ON st.sale_id = s.id"
)


class SalesSummary(NamedTuple):
    sales: int  # how many sales (not `count`: that name is tuple.count)
    gross: int
    voided: int
    refunded: int
    net: int


def _records(cur: sqlite3.Cursor) -> list[Record]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def stock_levels(
    conn: sqlite3.Connection, skus: Iterable[str] | None = None, *, store: str | None = None
) -> dict[str, int]:
    """On hand per SKU in `store`, or summed over every store when `store` is None;
    SKUs asked for but never moved or counted there are 0."""
    if store is None:
        cur = conn.execute(
            "SELECT sku, SUM(on_hand) FROM st_stock_levels GROUP BY sku ORDER BY sku"
        )
    else:
        cur = conn.execute(
            "SELECT sku, on_hand FROM st_stock_levels WHERE store = ? ORDER BY sku", (store,)
        )
    rows: dict[str, int] = dict(cur)
    if skus is None:
        return rows
    return {sku: rows.get(sku, 0) for sku in skus}


def stock_by_store(
    conn: sqlite3.Connection, skus: Iterable[str] | None = None
) -> dict[str, dict[str, int]]:
    """{store: {sku: on_hand}} for every store with stock rows here (HQ: every store)."""
    out: dict[str, dict[str, int]] = {}
    for store, sku, on_hand in conn.execute(
        "SELECT store, sku, on_hand FROM st_stock_levels ORDER BY store, sku"
    ):
        out.setdefault(store, {})[sku] = on_hand
    if skus is None:
        return out
    wanted = list(skus)
    return {store: {sku: levels.get(sku, 0) for sku in wanted} for store, levels in out.items()}


def _overrides(conn: sqlite3.Connection, sku: str | None) -> dict[str, dict[str, int]]:
    """sku -> {store: price} of the store overrides in effect (of one SKU, or all)."""
    where, args = ("WHERE sku = ?", (sku,)) if sku is not None else ("", ())
    out: dict[str, dict[str, int]] = {}
    for s, store, price in conn.execute(
        f"SELECT sku, store, price FROM st_store_prices {where} ORDER BY sku, store", args
    ):
        out.setdefault(s, {})[store] = price
    return out


def _product_record(r: Record, overrides: dict[str, int], store: str | None) -> Record:
    """A product as `store` sells it: `price` is the store's override if it has one in
    effect, else the chain price; `chain_price` and every `overrides` apart."""
    chain = r["price"]
    price = overrides.get(store, chain) if store is not None else chain
    return {**r, "price": price, "active": bool(r["active"]), "chain_price": chain,
            "overrides": overrides}  # fmt: skip


def product(conn: sqlite3.Connection, sku: str, store: str | None = None) -> Record | None:
    """The product as `store`'s tills sell it (None: the chain's view, as at HQ)."""
    rows = _records(conn.execute(f"{_PRODUCT} WHERE sku = ?", (sku,)))
    if not rows:
        return None
    return _product_record(rows[0], _overrides(conn, sku).get(sku, {}), store)


def catalog(conn: sqlite3.Connection, store: str | None = None) -> list[Record]:
    """Every product as `store` sells it (None: the chain's view), overrides apart."""
    overrides = _overrides(conn, None)
    return [
        _product_record(r, overrides.get(r["sku"], {}), store)
        for r in _records(conn.execute(f"{_PRODUCT} ORDER BY sku"))
    ]


def _full_sale(conn: sqlite3.Connection, r: Record) -> Record:
    sid = r["id"]
    r["voided"] = bool(r["voided"])
    r["lines"] = _records(
        conn.execute(
            "SELECT line, sku, qty, unit_price, discount, tax, tax_rate_bp FROM st_sale_lines"
            " WHERE sale_id = ? ORDER BY line",
            (sid,),
        )
    )
    r["payments"] = _records(
        conn.execute(
            "SELECT method, amount, last4, auth, reference, approval, override_by FROM st_payments"
            " WHERE sale_id = ? ORDER BY idx",
            (sid,),
        )
    )
    return r


def sale(conn: sqlite3.Connection, sale_id: str) -> Record | None:
    """A sale with its lines, payments, `voided` flag and `refunded` amount."""
    rows = _records(conn.execute(f"{_SALE} WHERE s.id = ?", (sale_id,)))
    return _full_sale(conn, rows[0]) if rows else None


def sale_by_receipt(conn: sqlite3.Connection, receipt: str) -> list[Record]:
    """All sales with this receipt number (more than one is a `receipt_collision`)."""
    rows = _records(
        conn.execute(f"{_SALE} WHERE s.receipt = ? ORDER BY s.hlc, s.origin, s.seq", (receipt,))
    )
    return [_full_sale(conn, r) for r in rows]


def sales_summary(conn: sqlite3.Connection, shift: str | None = None) -> SalesSummary:
    """(count, gross, voided, refunded, net) over all sales, or one shift's.

    Count and gross come from the per-shift totals, voided and refunded from the voids
    and refunds (joined to their sales): cost grows with those, not with all sales.
    """
    where, args = ("WHERE shift = ?", (shift,)) if shift is not None else ("", ())
    and_shift = "AND s.shift = ?" if shift is not None else ""
    count, gross = conn.execute(
        f"SELECT COALESCE(SUM(sales), 0), COALESCE(SUM(gross), 0) FROM st_totals {where}", args
    ).fetchone()
    (voided,) = conn.execute(
        "SELECT COALESCE(SUM(s.total), 0) FROM st_sales s"
        f" WHERE s.id IN (SELECT sale_id FROM st_voids) {and_shift}",
        args,
    ).fetchone()
    (refunded,) = conn.execute(
        "SELECT COALESCE(SUM(r.amount), 0) FROM st_refunds r JOIN st_sales s ON s.id = r.sale_id"
        f" WHERE r.sale_id NOT IN (SELECT sale_id FROM st_voids) {and_shift}",
        args,
    ).fetchone()
    return SalesSummary(count, gross, voided, refunded, gross - voided - refunded)


def _cash_flows(conn: sqlite3.Connection, shift: str) -> tuple[int, int]:
    """(cash taken by non-voided sales net of change, cash refunded on them)."""
    taken, refunded = conn.execute(
        "SELECT COALESCE(SUM((SELECT COALESCE(SUM(p.amount), 0) FROM st_payments p"
        "   WHERE p.sale_id = s.id AND p.method = 'cash') - s.change), 0),"
        " COALESCE(SUM((SELECT COALESCE(SUM(r.amount), 0) FROM st_refunds r"
        "   WHERE r.sale_id = s.id AND r.method = 'cash')), 0)"
        " FROM st_sales s JOIN st_sale_status st ON st.sale_id = s.id"
        " WHERE s.shift = ? AND NOT st.voided",
        (shift,),
    ).fetchone()
    return int(taken), int(refunded)


def shift_totals(conn: sqlite3.Connection, shift: str) -> Record:
    """Sales figures of a shift and its cash drawer: expected vs counted at close."""
    opened = conn.execute(
        "SELECT float_amount, cashier, eid FROM st_shift_open WHERE shift = ?", (shift,)
    ).fetchone()
    closed = conn.execute(
        "SELECT counted_cash, eid FROM st_shift_close WHERE shift = ?", (shift,)
    ).fetchone()
    taken, cash_refunds = _cash_flows(conn, shift)
    float_amount = opened[0] if opened else 0
    expected = float_amount + taken - cash_refunds
    counted = closed[0] if closed else None
    return {
        "shift": shift,
        **sales_summary(conn, shift)._asdict(),
        "opened_by": opened[2] if opened else None,
        "cashier": opened[1] if opened else None,
        "float": float_amount,
        "cash_taken": taken,
        "cash_refunded": cash_refunds,
        "expected_cash": expected,
        "closed_by": closed[1] if closed else None,
        "counted_cash": counted,
        "over_short": None if counted is None else counted - expected,
        "tax": shift_tax(conn, shift),
    }


_SHIFT_TAX = """
SELECT (SELECT COALESCE(SUM(l.tax), 0) FROM st_sales s JOIN st_sale_lines l ON l.sale_id = s.id
        WHERE s.shift = :shift AND s.id NOT IN (SELECT sale_id FROM st_voids))
     - (SELECT COALESCE(SUM(rl.tax), 0) FROM st_refunds r
        JOIN st_refund_lines rl ON rl.refund_id = r.eid JOIN st_sales s ON s.id = r.sale_id
        WHERE s.shift = :shift AND s.id NOT IN (SELECT sale_id FROM st_voids))
"""


def shift_tax(conn: sqlite3.Connection, shift: str) -> int:
    """Tax in the shift's sales, less what refunds of them gave back (the conventions of
    `net`: voided sales count for nothing, refunds against their sale's shift)."""
    return int(conn.execute(_SHIFT_TAX, {"shift": shift}).fetchone()[0])


def state_digest(conn: sqlite3.Connection, *, recompute: bool = False) -> str:
    """The digest of every state table as a set of rows (`schema.DIGESTED`).

    Each table's part is a multiset hash of its rows (`core.digest`): no rowid, no
    application time and no arrival order enters, so equal sets of events give equal
    digests on every replica. Read from the accumulators the tables' triggers keep in
    the fold's transaction (one small read); `recompute=True`, or a database that keeps
    none, hashes every row instead. Both give the same value: the tests hold them to it.
    """
    accs = None if recompute else digest.read_accs(conn, DIGESTED)
    if accs is None:
        accs = digest.scan_digest(conn, DIGESTED, DIGEST_WHERE)
    return digest.combine(accs, DIGESTED)


def state_snapshot(conn: sqlite3.Connection) -> Record:
    """A JSON-able picture of the state, for `tillmesh state --json`."""
    shifts = [
        r[0]
        for r in conn.execute(
            "SELECT shift FROM st_shift_open UNION SELECT shift FROM st_shift_close ORDER BY 1"
        )
    ]
    return {
        "digest": state_digest(conn),
        "stock": stock_levels(conn),
        "stock_by_store": stock_by_store(conn),
        "catalog": catalog(conn),
        "sales": sales_summary(conn)._asdict(),
        "shifts": [shift_totals(conn, s) for s in shifts],
        "resolutions": _records(
            conn.execute(
                "SELECT eid, conflict, action, by_ AS by, reason, price, hlc, origin"
                " FROM st_resolutions ORDER BY eid"
            )
        ),
    }
