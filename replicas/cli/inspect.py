"""Read-only inspection commands: `schema`, `state`, `log stats|dump|verify`.

They open a replica's database file directly (read-only; WAL lets them run beside a
live replica) and never need the network.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgspec

from conflict import queries
from core.errors import StorageError
from core.events import BODY_TYPES, Event, decode_event
from core.log import read_stats
from core.verify import Finding, verify_log
from replicas.cli.common import (
    add_command,
    add_group,
    check_args,
    event_record,
    format_hlc,
    jsonable,
    open_db,
    parse_time,
    print_json,
    time_order,
)
from replicas.errors import SelectsNothing
from replicas.site import key_registry_for

__all__ = ["iter_events", "register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "schema",
        cmd_schema,
        "Export a JSON Schema of every event type, for integrators.",
        "tillmesh schema --out events.schema.json",
    )
    p.add_argument("--out", type=Path, help="write to this file instead of stdout")

    p = add_command(
        sub,
        "state",
        cmd_state,
        "Show the state a replica's log folds to.",
        "tillmesh state data/s1/t1/log.db --digest --recompute",
    )
    p.add_argument("db", type=Path, help="the replica's log.db")
    p.add_argument("--json", action="store_true", help="the whole state as JSON")
    p.add_argument("--digest", action="store_true", help="only the state digest")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="hash every state row instead of reading the kept digest; exit 1 if they differ",
    )

    logs = add_group(
        sub,
        "log",
        "Inspect, verify and repair event logs.",
        "tillmesh log verify data/s1/t1/log.db",
    )
    p = add_command(
        logs,
        "stats",
        cmd_stats,
        "Counts, version vector and file size.",
        "tillmesh log stats data/s1/t1/log.db --json",
    )
    p.add_argument("db", type=Path)
    p.add_argument("--json", action="store_true")

    p = add_command(
        logs,
        "verify",
        cmd_verify,
        "Check hash chains, contiguity, canonical encoding and signatures (offline); exit 1"
        " naming every defect.",
        "tillmesh log verify data/s1/t1/log.db\n"
        "  tillmesh log verify /media/usb/log.db --site /var/lib/tillmesh   # a copy",
    )
    p.add_argument("db", type=Path)
    p.add_argument(
        "--site",
        type=Path,
        help="the site folder whose site.json names every origin's key (default: the"
        " folder above the log that holds a site.json)",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--quiet", action="store_true", help="print defects only")

    p = add_command(
        logs,
        "dump",
        cmd_dump,
        "Print events, filtered, as JSON lines or a table.",
        "tillmesh log dump data/s1/t1/log.db --origin s1/t2 --type sale.completed",
    )
    p.add_argument("db", type=Path)
    p.add_argument("--origin", help="only this origin (e.g. s1/t2 or hq)")
    p.add_argument("--from", dest="from_seq", type=int, help="first seq (needs --origin)")
    p.add_argument("--type", dest="event_type", help="only this event type")
    p.add_argument(
        "--since", type=parse_time, help="HLC time at or after (ISO 8601, UTC if no zone)"
    )
    p.add_argument("--until", type=parse_time, help="HLC time before (ISO 8601)")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
    # Every ops command takes --json; dump's JSON is one event per line (as the default).
    output.add_argument(
        "--json", dest="format", action="store_const", const="jsonl", help="= --format jsonl"
    )
    check_args(p, _dump_args)


def _dump_args(args: argparse.Namespace) -> str | None:
    if args.from_seq is not None and not args.origin:
        return "--from needs --origin (seqs are per origin)"
    return time_order(args)


def iter_events(
    conn: sqlite3.Connection, where: str = "", params: tuple[Any, ...] = ()
) -> Iterator[tuple[Event, int]]:
    cursor = conn.execute(f"SELECT raw, flags FROM events {where} ORDER BY origin, seq", params)
    while rows := cursor.fetchmany(2000):
        for raw, flags in rows:
            yield decode_event(raw), flags


# --- commands -------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    _, components = msgspec.json.schema_components(
        [Event, *BODY_TYPES.values()], ref_template="#/$defs/{name}"
    )
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "tillmesh events",
        "description": "The envelope (encoded as a msgpack array, in field order) and, "
        "by `type`, the body it carries as canonical msgpack. Money is integer minor units.",
        "event_types": {t: f"#/$defs/{cls.__name__}" for t, cls in BODY_TYPES.items()},
        "$defs": components,
    }
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if args.out:
        _write_schema(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def _write_schema(out: Path, text: str) -> None:
    """A missing folder or a denied file is the operator's to fix: one line, not a trace."""
    try:
        out.write_text(text)
    except OSError as e:
        raise StorageError(str(out), e.strerror or str(e)) from e


def cmd_state(args: argparse.Namespace) -> int:
    with closing(open_db(args.db)) as conn:
        if args.recompute:
            return _recompute(conn)
        if args.digest:
            print(queries.state_digest(conn))
        elif args.json:
            print_json(queries.state_snapshot(conn))
        else:
            _print_state_table(conn)
    return 0


def _recompute(conn: sqlite3.Connection) -> int:
    """The digest from every row; a kept digest that disagrees is a defect (exit 1)."""
    scanned = queries.state_digest(conn, recompute=True)
    print(scanned)
    kept = queries.state_digest(conn)
    if kept != scanned:
        print(f"tillmesh: the kept state digest {kept} differs from the rows'", file=sys.stderr)
        return 1
    return 0


def _print_state_table(conn: sqlite3.Connection) -> None:
    summary = queries.sales_summary(conn)
    print(f"digest   {queries.state_digest(conn)}")
    print(
        f"sales    {summary.sales}  gross {summary.gross}  voided {summary.voided}  "
        f"refunded {summary.refunded}  net {summary.net}"
    )
    by_store = queries.stock_by_store(conn)
    if len(by_store) > 1:  # HQ (or a till holding HQ's own stock too): each store apart
        for store, levels in by_store.items():
            _print_stock(f"stock {store}", levels)
    else:  # a till: its store's stock, as it always printed
        _print_stock("stock", queries.stock_levels(conn))


def _print_stock(title: str, levels: dict[str, int]) -> None:
    print(f"{title:8} {len(levels)} SKUs, {sum(levels.values())} units on hand")
    for sku, qty in sorted(levels.items())[:20]:
        print(f"  {sku:24} {qty:>8}")
    if len(levels) > 20:
        print(f"  ... {len(levels) - 20} more (use --json)")


def cmd_stats(args: argparse.Namespace) -> int:
    with closing(open_db(args.db)) as conn:
        stats = _stats(conn, args.db)
    if args.json:
        print_json(stats)
    else:
        for key in ("replica_id", "events", "pending", "quarantined", "file_bytes"):
            print(f"{key:12} {stats[key]}")
        for origin, seq in sorted(stats["version_vector"].items()):
            print(f"  {origin:20} {seq}")
    return 0


def _stats(conn: sqlite3.Connection, path: Path) -> dict[str, Any]:
    stats = asdict(read_stats(conn, path))
    del stats["path"]
    stats["replica_id"] = stats["replica_id"] or None
    return stats


def dump_filter(args: argparse.Namespace) -> tuple[str, tuple[Any, ...]]:
    clauses, params = [], []
    if args.origin:
        clauses.append("origin = ? AND seq >= ?")
        params += [args.origin, args.from_seq or 1]
    if args.event_type:
        clauses.append("type = ?")
        params.append(args.event_type)
    if args.since is not None:
        clauses.append("hlc >= ?")
        params.append(args.since)
    if args.until is not None:
        clauses.append("hlc < ?")
        params.append(args.until)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def cmd_dump(args: argparse.Namespace) -> int:
    where, params = dump_filter(args)
    with closing(open_db(args.db)) as conn:
        if args.event_type is not None:
            _check_type(conn, args.event_type)
        for ev, flags in iter_events(conn, where, params):
            record = event_record(ev, flags)
            if args.format == "jsonl":
                sys.stdout.write(json.dumps(record, sort_keys=True, default=jsonable) + "\n")
            else:
                print(f"{format_hlc(ev.hlc)}  {ev.id:24} {ev.type:18} {_summary(record)}")
    return 0


def _check_type(conn: sqlite3.Connection, event_type: str) -> None:
    """A type this build does not know is a typo, unless the log holds events of it
    (a newer replica's, stored and forwarded): then it is a filter like any other."""
    if event_type in BODY_TYPES:
        return
    if conn.execute("SELECT 1 FROM events WHERE type = ? LIMIT 1", (event_type,)).fetchone():
        return
    known = ", ".join(sorted(BODY_TYPES))
    raise SelectsNothing("dump", f"no event type {event_type!r} (known: {known})")


def _summary(record: dict[str, Any]) -> str:
    body = record.get("body") or {}
    keys = ("receipt", "sale", "sku", "qty", "delta", "count", "price", "shift")
    who = ("cashier", "by", "approved_by")  # free text: quoted, it may hold blanks
    said = [f"{k}={body[k]}" for k in keys if k in body]
    said += [f"{k}={json.dumps(body[k])}" for k in who if body.get(k)]
    return " ".join(said) or record.get("body_error", "")


def cmd_verify(args: argparse.Namespace) -> int:
    registry, where = key_registry_for(args.db, args.site)
    with closing(open_db(args.db)) as conn:
        report = verify_log(conn, verifier=registry)
    if registry is None:
        report.findings.append(Finding("notice", "signatures", "-", 0, f"not checked: {where}"))
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "events": report.events,
                "origins": report.origins,
                "findings": [vars(f) for f in report.findings],
            }
        )
        return 0 if report.ok else 1
    for finding in report.findings:
        if finding.severity == "defect" or not args.quiet:
            print(finding)
    if registry is not None:
        print(f"signatures checked against the keys in {where}")
    verdict = "OK" if report.ok else f"FAILED: {len(report.defects)} defect(s)"
    print(f"{args.db}: {report.events} events from {report.origins} origins: {verdict}")
    return 0 if report.ok else 1
