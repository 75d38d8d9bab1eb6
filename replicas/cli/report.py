"""`tillmesh report`: sales, payments, tax, best sellers and stock, for HQ analysts.

Reads a replica's log read-only (WAL lets it run beside a live HQ or till): on HQ's
log every store, on a till's its own store. Given a postgresql:// DSN instead, reads
HQ's PostgreSQL read model (`replicas.hq.reports`: the same figures, in a read-only
transaction). Output is a table, `--json` or `--csv`
(for a spreadsheet or BI tool). Money is int minor units, as everywhere in tillmesh.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import Any

from conflict import reports
from conflict.reports import SALES_GROUPS, Window
from replicas.cli.common import add_command, add_group, open_db, positive_int, print_json
from replicas.hq import reports as pg_reports
from replicas.hq.connect import is_postgres, open_readonly

__all__ = ["parse_utc_offset", "register"]

Record = dict[str, Any]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = add_group(
        sub,
        "report",
        "Reports for HQ analysts: sales, payments, tax, best sellers, stock, prices (read-only).",
        "tillmesh report sales data/hq/log.db --by store,day --since 2026-11-01",
    )
    p = _command(
        group,
        "sales",
        _sales,
        "Sales, gross, voided, refunded and net, grouped (by store and day by default).",
        "tillmesh report sales data/hq/log.db --by store,day --utc-offset +01:00 --csv",
    )
    p.add_argument(
        "--by",
        default="store,day",
        help=f"comma-separated, from: {', '.join(SALES_GROUPS)} (default: store,day)",
    )
    _command(
        group,
        "payments",
        _payments,
        "Money taken per store, method and authorisation; 'deferred' cards are offline "
        "store-and-forward payments the merchant carries the risk of until accepted.",
        "tillmesh report payments data/hq/log.db --store s1 --since 2026-11-25",
    )
    _command(
        group,
        "tax",
        _tax,
        "Tax the tills recorded per store, day and rate (basis points), less refunds; sales "
        "made before tills computed tax show rate empty: not recorded.",
        "tillmesh report tax data/hq/log.db --since 2026-12-01 --utc-offset +01:00",
    )
    p = _command(
        group,
        "items",
        _items,
        "Best-selling SKUs per store by revenue (non-voided sales).",
        "tillmesh report items data/hq/log.db --top 10 --since 2026-11-01",
    )
    p.add_argument("--top", type=positive_int, default=20, help="SKUs per store (default 20)")
    _command(
        group,
        "declines",
        _declines,
        "Offline card payments declined or expired, per store, outcome and the manager's"
        " decision (open, paid_other_way, written_off, refund_reversed).",
        "tillmesh report declines data/hq/log.db --store s1",
        windowed=False,
    )
    p = _command(
        group,
        "stock",
        _stock,
        "On hand per store and SKU, optionally only what runs low (the level now).",
        "tillmesh report stock data/hq/log.db --below 5",
        windowed=False,
    )
    p.add_argument("--below", type=int, help="only SKUs with fewer than this many on hand")
    _command(
        group,
        "prices",
        _prices,
        "Store price overrides in effect, beside the chain price each replaces (HQ's"
        " view: every store's; a store not listed sells at the chain price).",
        "tillmesh report prices data/hq/log.db --store s1",
        windowed=False,
    )


def _command(
    group: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    report: Callable[[Any, Any, argparse.Namespace], list[Record]],
    summary: str,
    example: str,
    *,
    windowed: bool = True,
) -> argparse.ArgumentParser:
    p = add_command(group, name, lambda args: _run(report, args), summary, example)
    p.add_argument(
        "db",
        help="a replica's log.db (HQ's holds every store), or HQ's postgresql://... DSN",
    )
    p.add_argument("--store", help="only this store")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="as JSON")
    out.add_argument("--csv", action="store_true", help="as CSV with a header row")
    if windowed:
        _window_args(p)
    return p


def _window_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=_iso, help="from this ISO 8601 time or date (in --utc-offset)")
    p.add_argument("--until", type=_iso, help="before this ISO 8601 time or date (in --utc-offset)")
    p.add_argument(
        "--utc-offset",
        type=parse_utc_offset,
        default=0,
        metavar="+HH:MM",
        help="the time zone days and hours are cut in, and --since/--until read in "
        "(default +00:00; west of UTC write UTC-03:00 or --utc-offset=-03:00)",
    )


def _run(
    report: Callable[[Any, Any, argparse.Namespace], list[Record]], args: argparse.Namespace
) -> int:
    if is_postgres(args.db):
        with open_readonly(args.db) as pg:
            rows = report(pg_reports, pg, args)
    else:
        with closing(open_db(Path(args.db))) as conn:
            rows = report(reports, conn, args)
    if args.json:
        print_json(rows)
    elif args.csv:
        _print_csv(rows)
    else:
        _print_table(rows)
    return 0


def _window(args: argparse.Namespace) -> Window:
    return Window.between(args.since, args.until, args.store, args.utc_offset)


def _sales(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    by = [part.strip() for part in args.by.split(",") if part.strip()]
    result: list[Record] = source.sales_report(conn, by, _window(args))
    return result


def _payments(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.payments_report(conn, _window(args))
    return result


def _tax(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.tax_report(conn, _window(args))
    return result


def _items(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.items_report(conn, _window(args), args.top)
    return result


def _declines(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.declines_report(conn, args.store)
    return result


def _stock(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.stock_report(conn, args.store, args.below)
    return result


# --- arguments -------------------------------------------------------------------

_OFFSET = re.compile(r"^(?:UTC)?([+-])(\d{2}):?(\d{2})$")


def _prices(source: Any, conn: Any, args: argparse.Namespace) -> list[Record]:
    result: list[Record] = source.prices_report(conn, args.store)
    return result


def parse_utc_offset(text: str) -> int:
    """'+01:00', '-0530', 'UTC-03:00', 'Z' -> minutes east of UTC. ('UTC-03:00' because
    argparse reads a bare '-03:00' as an option: that one needs --utc-offset=-03:00.)"""
    if text in ("Z", "z"):
        return 0
    m = _OFFSET.match(text)
    if m is None or int(m[2]) > 23 or int(m[3]) > 59:
        raise argparse.ArgumentTypeError(f"not a UTC offset like +01:00: {text!r}")
    minutes = int(m[2]) * 60 + int(m[3])
    return minutes if m[1] == "+" else -minutes


def _iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or date: {text!r}") from e


# --- output ----------------------------------------------------------------------


def _print_csv(rows: Sequence[Record]) -> None:
    if not rows:
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _print_table(rows: Sequence[Record]) -> None:
    if not rows:
        print("(no rows)")
        return
    names = list(rows[0])
    cells = [[_cell(r[n]) for n in names] for r in rows]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    numeric = [all(isinstance(r[n], int) for r in rows) for n in names]

    def line(values: Sequence[str]) -> str:
        parts = (
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    print(line(names))
    for c in cells:
        print(line(c))


def _cell(value: object) -> str:
    return "" if value is None else str(value)
