"""Ops commands over replica databases: `tillmesh log replay|export|import|diff|compact|
rebuild|restore`, added to the `log` group that `cli_inspect` creates.

Read-only commands (replay, export, diff) open the file read-only and work beside a
live replica. Writers (import, compact, rebuild, restore) want the replica stopped.
Every command takes `--json`; long runs show a progress bar when stdout is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from tillmesh.conflict import queries
from tillmesh.core.errors import StorageError
from tillmesh.core.events import HQ, parse_event_id, store_of
from tillmesh.core.sqlite import translate
from tillmesh.core.verify import verify_log
from tillmesh.replicas import ops, ops_diff, ops_export, ops_replay, ops_restore
from tillmesh.replicas.cli import add_command
from tillmesh.replicas.cli_inspect import event_record, format_hlc, parse_time, print_json

__all__ = ["load_vectors", "register"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
SQLITE_MAGIC = b"SQLite format 3\x00"
END_OF_TIME = "\U0010ffff"


def register(sub: SubParsers) -> None:
    logs = _log_group(sub)
    for add in (_replay, _export, _import, _diff, _compact, _rebuild, _restore):
        add(logs)


def _log_group(sub: SubParsers) -> SubParsers:
    """The `log` group's subcommands, as registered by cli_inspect."""
    parser = sub.choices["log"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the log command group has no subcommands")  # a wiring bug


def _cmd(
    logs: SubParsers,
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    p = add_command(logs, name, _translated(run), summary, example)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _translated(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """SQLite errors past the open (locked at BEGIN, damaged pages) as tillmesh errors."""

    def guarded(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except sqlite3.Error as e:
            raise translate(str(getattr(args, "db", None) or getattr(args, "db_a", "?")), e) from e

    return guarded


@contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on a terminal; None (no output) otherwise."""
    if not sys.stdout.isatty():
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# --- replay ---------------------------------------------------------------------------------------


def _replay(logs: SubParsers) -> None:
    p = _cmd(
        logs,
        "replay",
        cmd_replay,
        "Fold the events up to a point into a scratch state: the stream with running "
        "totals, and the state as of then.",
        "tillmesh log replay data/s1/t3/log.db --until 2024-05-04T14:20 --store s1",
    )
    p.add_argument("db", type=Path)
    cut = p.add_mutually_exclusive_group(required=True)
    cut.add_argument("--until", type=parse_time, help="events before this time (ISO 8601)")
    cut.add_argument(
        "--upto",
        metavar="ORIGIN:SEQ",
        help="up to and including this event, in (hlc, origin, seq) order",
    )
    p.add_argument("--store", help="only this store's origins (and HQ's)")
    p.add_argument("--since", type=parse_time, help="print events from this time (state is full)")
    p.add_argument("--state-only", action="store_true", help="print the final state only")


def cmd_replay(args: argparse.Namespace) -> int:
    scope = ops.scope_of(None) if args.store is None else _store_scope(args.store)
    with closing(ops.open_log(args.db)) as conn:
        cut = _cut(conn, args)
        total = int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        with progress_bar("replaying", total) as progress:
            result = ops_replay.replay(conn, cut, scope, progress)
    steps = [s for s in result.steps if args.since is None or s.event.hlc >= args.since]
    if args.json:
        print_json(
            {
                "cut": _cut_record(cut),
                "events": [] if args.state_only else [_step_record(s) for s in steps],
                "state": result.state,
            }
        )
        return 0
    print(f"replay of {args.db} up to {_cut_text(args)}: {result.events} events")
    if not args.state_only:
        _print_steps(steps)
    _print_state(result.state)
    return 0


def _store_scope(store: str) -> Callable[[str], bool]:
    return lambda origin: origin == HQ or store_of(origin) == store


def _cut(conn: Any, args: argparse.Namespace) -> ops.Cut:
    if args.until is not None:
        return args.until - 1, END_OF_TIME, 1 << 62
    try:
        origin, seq = parse_event_id(args.upto)
    except ValueError:
        raise StorageError("replay", f"--upto wants ORIGIN:SEQ, got {args.upto!r}") from None
    return ops_replay.event_cut(conn, origin, seq)


def _cut_text(args: argparse.Namespace) -> str:
    return f"{format_hlc(args.until)} (exclusive)" if args.until is not None else args.upto


def _cut_record(cut: ops.Cut) -> dict[str, Any]:
    hlc, origin, seq = cut
    if origin == END_OF_TIME:
        return {"until_hlc": hlc + 1, "until": format_hlc(hlc + 1)}
    return {"upto": f"{origin}:{seq}", "hlc": hlc, "time": format_hlc(hlc)}


def _step_record(step: ops_replay.ReplayStep) -> dict[str, Any]:
    return {
        **event_record(step.event, step.flags),
        "time": format_hlc(step.event.hlc),
        "sales": step.sales,
        "gross": step.gross,
        "stock": step.stock,
    }


def _print_steps(steps: list[ops_replay.ReplayStep]) -> None:
    print(f"{'time':29} {'event':14} {'type':16} {'sales':>5} {'gross':>9}  stock after")
    for s in steps:
        stock = " ".join(f"{sku}={qty}" for sku, qty in s.stock.items())
        print(
            f"{format_hlc(s.event.hlc):29} {s.event.id:14} {s.event.type:16} "
            f"{s.sales:>5} {s.gross:>9}  {stock}"
        )


def _print_state(state: dict[str, Any]) -> None:
    sales = state["sales"]
    print(f"state    digest {state['digest'][:16]}")
    print(
        f"sales    {sales['sales']}  gross {sales['gross']}  voided {sales['voided']}  "
        f"refunded {sales['refunded']}  net {sales['net']}"
    )
    print("stock    " + (" ".join(f"{k}={v}" for k, v in sorted(state["stock"].items())) or "-"))


# --- export / import ------------------------------------------------------------------------------


def _export(logs: SubParsers) -> None:
    p = _cmd(
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
    with closing(ops.open_log(args.db)) as conn, progress_bar("exporting") as progress:
        header = ops_export.export_db(conn, args.out, args.origin, args.since, progress)
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
    p = _cmd(
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
        report = asyncio.run(ops_export.import_file(args.file, args.db, replica, progress))
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
    with closing(ops.open_log(db)) as conn:
        replica = ops.replica_of(conn)
    if replica is None:
        raise StorageError(str(db), "records no replica id; give --replica")
    return replica


# --- diff -----------------------------------------------------------------------------------------


def _diff(logs: SubParsers) -> None:
    p = _cmd(
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
    with closing(ops.open_log(args.db_a)) as a, closing(ops.open_log(args.db_b)) as b:
        d = ops_diff.diff_dbs(a, b)
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


def _print_state_diff(s: ops_diff.StateDiff) -> None:
    if not s.compared:
        print(s.note)
        return
    verdict = "equal" if s.digest_a == s.digest_b else f"{s.digest_a[:16]} != {s.digest_b[:16]}"
    print(f"state digest: {verdict}")
    for name, (va, vb) in s.sales.items():
        print(f"  sales.{name:10} A {va:>10}  B {vb:>10}")
    for sku, (va, vb) in s.stock.items():
        print(f"  stock {sku:12} A {va:>10}  B {vb:>10}")


# --- compact / rebuild ----------------------------------------------------------------------------


def _compact(logs: SubParsers) -> None:
    p = _cmd(
        logs,
        "compact",
        cmd_compact,
        "Snapshot the state and drop events every known replica (HQ required) holds.",
        "tillmesh log compact data/s1/t3/log.db --peers-vv data/hq/log.db data/s1/t1/log.db",
    )
    p.add_argument("db", type=Path)
    p.add_argument(
        "--peers-vv",
        nargs="+",
        type=Path,
        required=True,
        metavar="FILE_OR_DB",
        help="other replicas' databases, or JSON {replica: {origin: seq}}",
    )
    p.add_argument("--dry-run", action="store_true", help="show what would be dropped")
    p.add_argument("--vacuum", action="store_true", help="then VACUUM to shrink the file")


def cmd_compact(args: argparse.Namespace) -> int:
    vectors = load_vectors(args.peers_vv)
    with closing(ops.open_log(args.db, write=not args.dry_run)) as conn:
        if args.dry_run:
            floor = ops.compaction_floor(conn, vectors)
            plan = ops.compaction_plan(conn, floor)
            out: dict[str, Any] = {"dry_run": True, "floor": floor, "bases": plan}
        else:
            with progress_bar("compacting") as progress:
                floor, report = ops.compact_db(conn, vectors, progress)
            if args.vacuum:
                conn.execute("VACUUM")
            check = verify_log(conn)
            out = {
                "floor": floor,
                "bases": report.bases,
                "dropped": report.dropped,
                "kept": report.kept,
                "verify_ok": check.ok,
                "digest": queries.state_digest(conn),
            }
    if args.json:
        print_json(out)
    else:
        _print_compact(out)
    return 0 if out.get("verify_ok", True) else 1


def _print_compact(out: dict[str, Any]) -> None:
    print(f"{'origin':16} {'stable':>7}  base")
    for origin, stable in sorted(out["floor"].items()):
        base = out["bases"].get(origin)
        text = "unchanged" if base is None else f"{base[0]} -> {base[1]}"
        print(f"{origin:16} {stable:>7}  {text}")
    if out.get("dry_run"):
        print("dry run: nothing changed")
        return
    print(
        f"dropped {out['dropped']} events, kept {out['kept']}; "
        f"verify {'OK' if out['verify_ok'] else 'FAILED'}; digest {out['digest'][:16]}"
    )


def load_vectors(sources: list[Path]) -> dict[str, dict[str, int]]:
    """Version vectors by replica id, from replica databases or JSON files.

    JSON: {"replica": {"origin": seq}} or `tillmesh log stats --json` output.
    """
    vectors: dict[str, dict[str, int]] = {}
    for path in sources:
        vectors.update(_db_vector(path) if _is_sqlite(path) else _json_vectors(path))
    return vectors


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError as e:
        raise StorageError(str(path), e.strerror or str(e)) from e


def _db_vector(path: Path) -> dict[str, dict[str, int]]:
    with closing(ops.open_log(path)) as conn:
        replica = ops.replica_of(conn)
        if replica is None:
            raise StorageError(str(path), "database records no replica id")
        return {replica: dict(conn.execute("SELECT origin, seq FROM heads").fetchall())}


def _json_vectors(path: Path) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StorageError(str(path), f"neither a replica database nor JSON vectors: {e}") from e
    if isinstance(data, dict) and {"replica_id", "version_vector"} <= data.keys():
        data = {data["replica_id"]: data["version_vector"]}
    if not (
        isinstance(data, dict)
        and all(
            isinstance(vv, dict) and all(isinstance(s, int) for s in vv.values())
            for vv in data.values()
        )
    ):
        raise StorageError(str(path), 'JSON vectors must look like {"hq": {"s1/t1": 42}}')
    return {str(r): {str(o): int(s) for o, s in vv.items()} for r, vv in data.items()}


def _rebuild(logs: SubParsers) -> None:
    p = _cmd(
        logs,
        "rebuild",
        cmd_rebuild,
        "Re-derive the state tables: compaction snapshot + the events kept.",
        "tillmesh log rebuild data/s1/t3/log.db",
    )
    p.add_argument("db", type=Path)


def cmd_rebuild(args: argparse.Namespace) -> int:
    with closing(ops.open_log(args.db, write=True)) as conn:
        before = _digest_or_none(conn)
        with progress_bar("rebuilding") as progress:
            applied = ops.rebuild_db(conn, progress)
        after = queries.state_digest(conn)
    if args.json:
        print_json({"applied": applied, "digest_before": before, "digest": after})
    else:
        same = "unchanged" if before == after else f"was {before and before[:16]}"
        print(f"folded {applied} events onto the snapshot; digest {after[:16]} ({same})")
    return 0


def _digest_or_none(conn: Any) -> str | None:
    try:
        return queries.state_digest(conn)
    except Exception:  # missing or damaged state tables: that is what rebuild is for
        return None


# --- restore --------------------------------------------------------------------------------------


def _restore(logs: SubParsers) -> None:
    p = _cmd(
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
            ops_restore.restore_db(
                args.db, args.source, args.replica, force=args.force, progress=progress
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
        for origin, base in report.seeded.items():
            print(f"  {origin}: started from the source's snapshot at seq {base}")
        for reason in report.rejected[:20]:
            print(f"  rejected: {reason}")
    return 1 if report.rejected else 0
