"""`tillmesh log compact|rebuild`: snapshot the state and drop the events every known
replica holds, and re-derive the state tables from the snapshot and the events kept.

What the other replicas hold comes from their databases or from JSON version vectors
(`load_vectors`). Both commands write: the replica should be stopped.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from conflict import queries
from core.errors import StorageError
from core.verify import verify_log
from replicas.cli.common import SubParsers, log_command, print_json, progress_bar
from replicas.ops.common import (
    compact_db,
    compaction_floor,
    compaction_plan,
    ensure_stopped,
    open_log,
    rebuild_db,
    replica_of,
)

__all__ = ["add_compact", "add_rebuild", "cmd_compact", "cmd_rebuild", "load_vectors"]

SQLITE_MAGIC = b"SQLite format 3\x00"


def add_compact(logs: SubParsers) -> None:
    p = log_command(
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
    if not args.dry_run:
        ensure_stopped(args.db, "compact after stopping it (--dry-run works on a live one)")
    with closing(open_log(args.db, write=not args.dry_run)) as conn:
        if args.dry_run:
            out = _compaction_preview(conn, vectors)
        else:
            out = _compact_and_verify(conn, vectors, vacuum=args.vacuum)
    if args.json:
        print_json(out)
    else:
        _print_compact(out)
    return 0 if out.get("verify_ok", True) else 1


def _compaction_preview(
    conn: sqlite3.Connection, vectors: dict[str, dict[str, int]]
) -> dict[str, Any]:
    floor = compaction_floor(conn, vectors)
    plan = compaction_plan(conn, floor)
    return {"dry_run": True, "floor": floor, "bases": plan}


def _compact_and_verify(
    conn: sqlite3.Connection, vectors: dict[str, dict[str, int]], *, vacuum: bool
) -> dict[str, Any]:
    with progress_bar("compacting") as progress:
        floor, report = compact_db(conn, vectors, progress)
    if vacuum:
        conn.execute("VACUUM")
    check = verify_log(conn)
    return {
        "floor": floor,
        "bases": report.bases,
        "dropped": report.dropped,
        "kept": report.kept,
        "verify_ok": check.ok,
        "digest": queries.state_digest(conn),
    }


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
    with closing(open_log(path)) as conn:
        replica = replica_of(conn)
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


def add_rebuild(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "rebuild",
        cmd_rebuild,
        "Re-derive the state tables: compaction snapshot + the events kept.",
        "tillmesh log rebuild data/s1/t3/log.db",
    )
    p.add_argument("db", type=Path)


def cmd_rebuild(args: argparse.Namespace) -> int:
    ensure_stopped(args.db, "rebuild after stopping it (a restart rebuilds a stale state)")
    with closing(open_log(args.db, write=True)) as conn:
        before = _digest_or_none(conn)
        with progress_bar("rebuilding") as progress:
            applied = rebuild_db(conn, progress)
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
