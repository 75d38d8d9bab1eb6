"""What HQ's PostgreSQL database says, for the demo's proof: sales, stock, money, cards.

Read-only, like the demo's reads of a replica's `log.db` (`replicas.demo.checks`).
"""

from __future__ import annotations

from collections.abc import Iterator

from conflict.reports import Window
from replicas.hq.connect import open_readonly
from replicas.hq.reports import payments_report, sales_totals

__all__ = ["card_money", "event_batches", "facts"]

Stock = dict[tuple[str, str], int]


def facts(dsn: str) -> tuple[dict[str, int], Stock, dict[str, int]]:
    """(sale id -> total, (store, sku) -> on hand but zeros, gross/voided/refunded)."""
    with open_readonly(dsn) as conn:
        sales = {str(i): int(t) for i, t in conn.execute("SELECT id, total FROM hq_sales")}
        stock = {
            (str(store), str(sku)): int(n)
            for store, sku, n in conn.execute("SELECT store, sku, on_hand FROM bi_stock_levels")
            if n
        }
        totals = sales_totals(conn)
    money = {k: totals[k] for k in ("gross", "voided", "refunded")}
    return sales, stock, money


def card_money(dsn: str) -> dict[str, int]:
    """Card money by settlement (online, captured, declined, expired, outstanding),
    zeros left out: the payments report's, as the demo reads a replica's log."""
    out: dict[str, int] = {}
    with open_readonly(dsn) as conn:
        for row in payments_report(conn, Window()):
            if row["method"] == "card" and row["amount"]:
                out[row["settlement"]] = out.get(row["settlement"], 0) + row["amount"]
    return out


def event_batches(dsn: str, size: int = 1000) -> Iterator[list[tuple[str, bytes, int]]]:
    """Every stored event as (origin, raw, flags), in batches."""
    with open_readonly(dsn) as conn, conn.cursor(name="events") as cur:
        cur.execute("SELECT origin, raw, flags FROM hq_events")
        while batch := cur.fetchmany(size):
            yield [(str(o), bytes(r), int(f)) for o, r, f in batch]
