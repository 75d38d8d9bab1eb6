"""Ops commands over replica databases: `tillmesh log replay|checkpoint|export|import|diff|
compact|rebuild|restore`, added to the `log` group that `cli.inspect` creates.

Read-only commands (replay, export, diff) open the file read-only and work beside a
live replica. Writers (import, compact, rebuild, restore) want the replica stopped.
Every command takes `--json`; long runs show a progress bar when stdout is a terminal.

This module registers them all, in that order, and holds export, import, diff and
restore; replay and checkpoint are in `cli.replay`, compact and rebuild in `cli.compact`.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from core import segments
from core.errors import StorageError
from core.verify import Finding
from replicas.cli.common import (
    SubParsers,
    log_command,
    log_group,
    parse_time,
    print_json,
    progress_bar,
)
from replicas.cli.compact import add_compact, add_rebuild
from replicas.cli.replay import add_checkpoint, add_replay
from replicas.ops.common import open_log, replica_of
from replicas.ops.diff import DbDiff, StateDiff, diff_dbs
from replicas.ops.export import export_db, import_file
from replicas.ops.restore import restore_db
from replicas.site import key_registry_for

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    logs = log_group(sub)
    for add in (
        add_replay,
        add_checkpoint,
        _export,
        _import,
        _diff,
        add_compact,
        add_rebuild,
        _restore,
    ):
        add(logs)


# --- export / import ------------------------------------------------------------------------------


def _export(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "export",
        cmd_export,
        "Write events to one portable, digest-checked file (for a USB stick).",
        "tillmesh log export data/s1/server/log.db --out /media/usb/s1.tmx --since 2024-05-01",
    )
    p.add_argument("db", type=Path)
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    p.add_argument("--origin", help="only this origin")
    p.add_argument("--since", type=parse_time, help="from the first event at/after this time")


def cmd_export(args: argparse.Namespace) -> int:
    with closing(open_log(args.db)) as conn, progress_bar("exporting") as progress:
        header = export_db(conn, args.out, args.origin, args.since, progress)
    if args.json:
        print_json({"file": str(args.out), "header": header})
        return 0
    print(
        f"wrote {header.count} events ({header.content_bytes} bytes) from {header.source} "
        f"to {args.out}"
    )
    for origin, first, last in header.ranges:
        print(f"  {origin:16} {first}..{last}")
    print(f"digest blake2b-256 {header.digest}")
    return 0


def _import(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "import",
        cmd_import,
        "Ingest an export file into a replica, checking signatures, chains and scope; idempotent.",
        "tillmesh log import /media/usb/s1.tmx data/hq/log.db --replica hq",
    )
    p.add_argument("file", type=Path)
    p.add_argument("db", type=Path)
    p.add_argument("--replica", help="the database's replica id (default: as recorded in it)")
    p.add_argument(
        "--site",
        type=Path,
        help="the site whose keys check the file's signatures (default: the folder above"
        " the database that holds a site.json)",
    )


def cmd_import(args: argparse.Namespace) -> int:
    replica = args.replica or _recorded_replica(args.db)
    registry, where = key_registry_for(args.db, args.site)
    if registry is None:  # a foreign file's events are applied only once verified
        raise StorageError(str(args.db), f"cannot check the file's signatures: {where}")
    with progress_bar("importing") as progress:
        report = asyncio.run(import_file(args.file, args.db, replica, progress, registry))
    if args.json:
        print_json(report)
    else:
        print(f"{args.file} (from {report.source}, {report.events} events) into {args.db}:")
        print(
            f"  accepted {report.accepted}  duplicates {report.duplicates}  held {report.held}"
            f"  out-of-scope {report.out_of_scope}  rejected {len(report.rejected)}"
        )
        for reason in report.rejected[:20]:
            print(f"  rejected: {reason}")
    return 1 if report.rejected else 0


def _recorded_replica(db: Path) -> str:
    with closing(open_log(db)) as conn:
        replica = replica_of(conn)
    if replica is None:
        raise StorageError(str(db), "records no replica id; give --replica")
    return replica


# --- diff -----------------------------------------------------------------------------------------


def _diff(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "diff",
        cmd_diff,
        "Show what each database lacks, where their chains part and the state difference,"
        " comparing heads and state digests first; exit 1 if they differ or one is damaged.",
        "tillmesh log diff data/hq/log.db data/s12/t1/log.db --verify",
    )
    p.add_argument("db_a", type=Path)
    p.add_argument("db_b", type=Path)
    p.add_argument(
        "--verify",
        action="store_true",
        help="first verify every event of both (as `log verify`), not only each head",
    )


def cmd_diff(args: argparse.Namespace) -> int:
    with closing(open_log(args.db_a)) as a, closing(open_log(args.db_b)) as b:
        total = sum(_event_count(conn) for conn in (a, b)) if args.verify else None
        with progress_bar("verifying", total) as progress:
            d = diff_dbs(a, b, progress, verify=args.verify)
    if args.json:
        print_json(_diff_record(d))
    else:
        _print_diff(d, args.db_a, args.db_b)
    return 1 if d.differs or d.damaged else 0


def _diff_record(d: DbDiff) -> dict[str, Any]:
    return {
        "differs": d.differs,
        "damaged": d.damaged,
        "scopes_differ": d.scopes_differ,
        "only_a": d.only_a,
        "only_b": d.only_b,
        "a": d.replica_a,
        "b": d.replica_b,
        "origins": d.origins,
        "state": d.state,
        "defects": {"a": _findings(d.defects_a), "b": _findings(d.defects_b)},
        "verified": d.verified,
    }


def _print_diff(d: DbDiff, db_a: Path, db_b: Path) -> None:
    print(f"A = {db_a} ({d.replica_a})\nB = {db_b} ({d.replica_b})")
    print(f"{'origin':16} {'A':>7} {'B':>7}  difference")
    unverified = _unverified(d)
    for o in d.origins:
        print(f"{o.origin:16} {o.seq_a:>7} {o.seq_b:>7}  {_origin_text(o, unverified)}")
    _print_state_diff(d.state)
    for side, db, defects in (("A", db_a, d.defects_a), ("B", db_b, d.defects_b)):
        _print_defects(side, db, defects)
    if not d.verified:
        print("checked: heads and head events; --verify re-checks every event")
    print(_verdict(d))


def _event_count(conn: sqlite3.Connection) -> int:
    return segments.count(conn)


def _findings(defects: list[Finding]) -> list[dict[str, Any]]:
    return [vars(f) for f in defects]


def _unverified(d: DbDiff) -> dict[str, str]:
    """Per origin with defects, the first defect of each side that has one."""
    out: dict[str, list[str]] = {}
    for side, defects in (("A", d.defects_a), ("B", d.defects_b)):
        for origin in dict.fromkeys(f.origin for f in defects):
            first = next(f for f in defects if f.origin == origin)
            out.setdefault(origin, []).append(f"{side} {first.kind} at {first.seq}")
    return {origin: ", ".join(texts) for origin, texts in out.items()}


def _origin_text(o: Any, unverified: dict[str, str]) -> str:
    parts = []
    if o.a_lacks:
        parts.append(f"A lacks {o.a_lacks[0]}..{o.a_lacks[1]}")
    if o.b_lacks:
        parts.append(f"B lacks {o.b_lacks[0]}..{o.b_lacks[1]}")
    if o.disagree_count:
        seqs = ", ".join(map(str, o.disagree))
        parts.append(f"BYTES DIFFER at {o.disagree_count} seq(s): {seqs}")
    if o.origin in unverified:  # its stored heads and hashes prove nothing: no "identical"
        parts.append(f"NOT VERIFIED: {unverified[o.origin]}")
    elif o.compared and not o.disagree_count:
        parts.append(f"common {o.compared[0]}..{o.compared[1]} identical")
    return "; ".join(parts) or "-"


def _print_defects(side: str, db: Path, defects: list[Finding]) -> None:
    if not defects:
        return
    print(f"{side} = {db} fails verify: {len(defects)} defect(s) in the compared origins")
    for f in defects[:20]:
        print(f"  {f}")
    if len(defects) > 20:
        print(f"  ... {len(defects) - 20} more (tillmesh log verify {db})")


def _verdict(d: DbDiff) -> str:
    if d.scopes_differ:
        held = "; ".join(
            f"{side} holds {', '.join(only) or 'nothing'} outside the other's scope"
            for side, only in (("A", d.only_a), ("B", d.only_b))
        )
        damage = f" ({_damage(d)})" if d.damaged else ""
        return (
            f"DIFFERENT SCOPES: {d.replica_a} and {d.replica_b} hold different stores"
            f" ({held}){damage}"
        )
    if not d.damaged:
        return "DIFFER" if d.differs else "SAME"
    return "DAMAGED: " + _damage(d)


def _damage(d: DbDiff) -> str:
    return "; ".join(
        f"{side} fails verify ({_first(defects)})"
        for side, defects in (("A", d.defects_a), ("B", d.defects_b))
        if defects
    )


def _first(defects: list[Finding]) -> str:
    f = defects[0]
    more = f" and {len(defects) - 1} more" if len(defects) > 1 else ""
    return f"{f.kind} at {f.origin}:{f.seq}: {f.detail}{more}"


def _print_state_diff(s: StateDiff) -> None:
    if not s.compared:
        print(s.note)
        return
    verdict = "equal" if s.digest_a == s.digest_b else f"{s.digest_a[:16]} != {s.digest_b[:16]}"
    print(f"state digest: {verdict}")
    for name, (va, vb) in s.sales.items():
        print(f"  sales.{name:10} A {va:>10}  B {vb:>10}")
    for sku, (va, vb) in s.stock.items():
        print(f"  stock {sku:12} A {va:>10}  B {vb:>10}")


# --- restore --------------------------------------------------------------------------------------


def _restore(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "restore",
        cmd_restore,
        "Build a replacement till's database from HQ's or a peer's, keeping its id and sequence.",
        "tillmesh log restore data/s1/t3/log.db --from data/hq/log.db --replica s1/t3",
    )
    p.add_argument("db", type=Path, help="the database to create")
    p.add_argument("--from", dest="source", type=Path, required=True, help="HQ's or a peer's DB")
    p.add_argument("--replica", required=True, help="the replacement's replica id, e.g. s1/t3")
    p.add_argument(
        "--site",
        type=Path,
        help="the site whose keys check the source's signatures (default: the folder above"
        " the new database that holds a site.json)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing non-empty DB (it is moved to DB.replaced-N/, not deleted)",
    )


def cmd_restore(args: argparse.Namespace) -> int:
    registry, where = key_registry_for(args.db, args.site)
    if registry is None:  # a replacement starts from events proven to be their origins'
        raise StorageError(str(args.db), f"cannot check the source's signatures: {where}")
    with progress_bar("restoring") as progress:
        report = asyncio.run(
            restore_db(
                args.db,
                args.source,
                args.replica,
                force=args.force,
                progress=progress,
                verifier=registry,
            )
        )
    if args.json:
        print_json(report)
    else:
        print(
            f"restored {args.db} as {report.replica_id} from {report.source}: "
            f"{report.events} events, digest {report.digest[:16]}"
        )
        print(
            f"  own events up to seq {report.own_seq}: next append is "
            f"{report.replica_id}:{report.own_seq + 1}"
        )
        if report.set_aside:
            print(f"  the database it replaced is kept in {report.set_aside}")
        for origin, base in report.seeded.items():
            print(f"  {origin}: started from the source's snapshot at seq {base}")
        for reason in report.rejected[:20]:
            print(f"  rejected: {reason}")
    return 1 if report.rejected else 0
