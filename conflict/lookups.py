"""Point reads of the state for the till's write paths and the ops tools: a shift's
status, a sale's refunds per line, the SKUs an event moves, the last receipt number.

Like `queries`, plain functions over a `sqlite3.Connection` returning typed values,
so no code outside `conflict/` reads an `st_` table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "LineRefunded",
    "has_refunds",
    "last_receipt",
    "open_shift",
    "refunded_by_line",
    "sale_skus",
    "sale_totals",
    "shift_closed",
]


class LineRefunded(NamedTuple):
    qty: int
    amount: int  # int minor units


def shift_closed(conn: sqlite3.Connection, shift: str) -> bool:
    """Whether a close of `shift` is here (its cash was counted)."""
    row = conn.execute("SELECT 1 FROM st_shift_close WHERE shift = ?", (shift,)).fetchone()
    return row is not None


def open_shift(conn: sqlite3.Connection, origin: str) -> str | None:
    """The newest shift `origin` opened and no one has closed here, if any."""
    row = conn.execute(
        "SELECT o.shift FROM st_shift_open o WHERE o.origin = ?"
        " AND NOT EXISTS (SELECT 1 FROM st_shift_close c WHERE c.shift = o.shift)"
        " ORDER BY o.hlc DESC LIMIT 1",
        (origin,),
    ).fetchone()
    return str(row[0]) if row else None


def has_refunds(conn: sqlite3.Connection, sale_id: str) -> bool:
    """Any refund of the sale here, whatever its amount (0 is allowed) or restock."""
    row = conn.execute("SELECT 1 FROM st_refunds WHERE sale_id = ? LIMIT 1", (sale_id,))
    return row.fetchone() is not None


def refunded_by_line(conn: sqlite3.Connection, sale_id: str) -> dict[int, LineRefunded]:
    """Per sale line, the qty and amount refunded so far."""
    rows = conn.execute(
        "SELECT rl.line, SUM(rl.qty), SUM(rl.amount) FROM st_refund_lines rl"
        " JOIN st_refunds r ON r.eid = rl.refund_id WHERE r.sale_id = ? GROUP BY rl.line",
        (sale_id,),
    )
    return {int(line): LineRefunded(int(qty), int(amount)) for line, qty, amount in rows}


def sale_skus(
    conn: sqlite3.Connection, sale_id: str, lines: Sequence[int] | None = None
) -> list[str]:
    """The SKUs of a sale known here (of the given line numbers only, if any), sorted."""
    if lines is None:
        rows = conn.execute(
            "SELECT DISTINCT sku FROM st_sale_lines WHERE sale_id = ? ORDER BY sku", (sale_id,)
        )
    else:
        marks = ", ".join("?" * len(lines))
        rows = conn.execute(
            f"SELECT DISTINCT sku FROM st_sale_lines WHERE sale_id = ? AND line IN ({marks})"
            " ORDER BY sku",
            (sale_id, *lines),
        )
    return [str(sku) for (sku,) in rows]


def sale_totals(conn: sqlite3.Connection) -> dict[str, int]:
    """Every sale here: id -> total (int minor units)."""
    return {
        str(sale_id): int(total)
        for sale_id, total in conn.execute("SELECT id, total FROM st_sales")
    }


def last_receipt(conn: sqlite3.Connection, origin: str, prefix: str) -> str | None:
    """The receipt of `origin`'s newest sale whose receipt starts with `prefix`."""
    row = conn.execute(
        "SELECT receipt FROM st_sales WHERE origin = ? AND substr(receipt, 1, ?) = ?"
        " ORDER BY seq DESC LIMIT 1",
        (origin, len(prefix), prefix),
    ).fetchone()
    return str(row[0]) if row else None
