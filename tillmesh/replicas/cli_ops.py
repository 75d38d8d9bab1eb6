"""Ops commands over replica databases: `tillmesh log replay|export|import|diff|compact|
rebuild|restore`, added to the `log` group that `cli_inspect` creates.

Read-only commands (replay, export, diff) open the file read-only and work beside a
live replica. Writers (import, compact, rebuild, restore) want the replica stopped.
Every command takes `--json`; long runs show a progress bar when stdout is a terminal.

This module registers them all, in that order, and holds export, import, diff and
restore; replay is in `cli_replay`, compact and rebuild in `cli_compact`.
"""

from __future__ import annotations

import argparse
import asyncio
from contextlib import closing
from pathlib import Path
from typing import Any

from tillmesh.core.errors import StorageError
from tillmesh.replicas.cli_compact import add_compact, add_rebuild
from tillmesh.replicas.cli_inspect import parse_time, print_json
from tillmesh.replicas.cli_log import SubParsers, log_command, log_group, progress_bar
from tillmesh.replicas.cli_replay import add_replay
from tillmesh.replicas.ops import open_log, replica_of
from tillmesh.replicas.ops_diff import StateDiff, diff_dbs
from tillmesh.replicas.ops_export import export_db, import_file
from tillmesh.replicas.ops_restore import restore_db

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    logs = log_group(sub)
    for add in (add_replay, _export, _import, _diff, add_compact, add_rebuild, _restore):
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
        "Ingest an export file into a replica, checking chains and scope; idempotent.",
        "tillmesh log import /media/usb/s1.tmx data/hq/log.db --replica hq",
    )
    p.add_argument("file", type=Path)
    p.add_argument("db", type=Path)
    p.add_argument("--replica", help="the database's replica id (default: as recorded in it)")


def cmd_import(args: argparse.Namespace) -> int:
    replica = args.replica or _recorded_replica(args.db)
    with progress_bar("importing") as progress:
        report = asyncio.run(import_file(args.file, args.db, replica, progress))
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
        "What each database lacks, events they disagree on byte for byte, and the state "
        "difference; exit 1 if they differ.",
        "tillmesh log diff data/hq/log.db data/s12/t1/log.db",
    )
    p.add_argument("db_a", type=Path)
    p.add_argument("db_b", type=Path)


def cmd_diff(args: argparse.Namespace) -> int:
    with closing(open_log(args.db_a)) as a, closing(open_log(args.db_b)) as b:
        d = diff_dbs(a, b)
    if args.json:
        print_json(
            {
                "differs": d.differs,
                "a": d.replica_a,
                "b": d.replica_b,
                "origins": d.origins,
                "state": d.state,
            }
        )
        return 1 if d.differs else 0
    print(f"A = {args.db_a} ({d.replica_a})\nB = {args.db_b} ({d.replica_b})")
    print(f"{'origin':16} {'A':>7} {'B':>7}  difference")
    for o in d.origins:
        print(f"{o.origin:16} {o.seq_a:>7} {o.seq_b:>7}  {_origin_text(o)}")
    _print_state_diff(d.state)
    print("DIFFER" if d.differs else "SAME")
    return 1 if d.differs else 0


def _origin_text(o: Any) -> str:
    parts = []
    if o.a_lacks:
        parts.append(f"A lacks {o.a_lacks[0]}..{o.a_lacks[1]}")
    if o.b_lacks:
        parts.append(f"B lacks {o.b_lacks[0]}..{o.b_lacks[1]}")
    if o.disagree_count:
        seqs = ", ".join(map(str, o.disagree))
        parts.append(f"BYTES DIFFER at {o.disagree_count} seq(s): {seqs}")
    elif o.compared:
        parts.append(f"common {o.compared[0]}..{o.compared[1]} identical")
    return "; ".join(parts) or "-"


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
    p.add_argument("--force", action="store_true", help="replace an existing non-empty DB")


def cmd_restore(args: argparse.Namespace) -> int:
    with progress_bar("restoring") as progress:
        report = asyncio.run(
            restore_db(args.db, args.source, args.replica, force=args.force, progress=progress)
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
        for origin, base in report.seeded.items():
            print(f"  {origin}: started from the source's snapshot at seq {base}")
        for reason in report.rejected[:20]:
            print(f"  rejected: {reason}")
    return 1 if report.rejected else 0
