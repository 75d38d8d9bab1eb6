"""Conflict commands: `conflicts` (list, read-only) and `resolve` (append a resolution).

`conflicts` opens the database read-only, so it runs beside a live replica; what it
finds is kept beside the file by state digest (`ops.conflicts`), so asking again of the
same state reads it back; a new state reads the oversell runs the fold keeps
(`conflict.oversold`) rather than replaying every sale. `resolve`
appends events through a real `EventLog` on the file, which must not be open in a
running replica at the same time (two writers would hand out the same seqs): it first
probes for other connections and, if the replica is running, says to resolve through
the replica's HTTP API instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Any, get_args

import msgspec

from conflict import policies as pol
from conflict.detect import KINDS, Conflict, Resolution
from conflict.resolve import Action, resolve
from conflict.state import StoreState
from core.errors import StorageError
from core.events import Event
from core.log import EventLog
from core.verify import Equivocated, equivocations
from replicas.cli.common import add_command, event_record, format_hlc, open_db, print_json
from replicas.hq import conflicts as pg_conflicts
from replicas.hq.connect import is_postgres
from replicas.ops.common import ensure_stopped
from replicas.ops.conflicts import find_conflicts, kept_differs, recompute_from_events

__all__ = ["conflict_record", "open_conflict_count", "register"]

_ACTIONS = get_args(Action)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "conflicts",
        cmd_conflicts,
        "List the conflicts a replica's events show, resolved ones with who/when/why"
        " (and any later resolution the effective one superseded).",
        "tillmesh conflicts data/s1/t1/log.db --open\n"
        "  tillmesh conflicts postgresql://tillmesh@db1/tillmesh --kind oversell",
    )
    p.add_argument(
        "db",
        help="the replica's log.db (opened read-only), or HQ's postgresql://... database"
        " (its events folded into a scratch state; nothing written there)",
    )
    p.add_argument("--json", action="store_true", help="as JSON, for scripts")
    p.add_argument("--open", action="store_true", help="only conflicts not yet resolved")
    p.add_argument("--kind", choices=KINDS, action="append", help="only this kind (repeatable)")
    p.add_argument(
        "--recompute",
        action="store_true",
        help="replay the stock history instead of reading the oversell runs the fold keeps,"
        " and fold the events afresh and detect there too; exit 1 if any disagrees",
    )
    _policies_arg(p)

    p = add_command(
        sub,
        "resolve",
        cmd_resolve,
        "Append a manager's resolution (with what it changes) to a stopped replica.",
        'tillmesh resolve data/s1/t1/log.db 3f2a9c01d4e5 --action compensate --by "Ana"'
        ' --reason "found 2 in the back"\n'
        "  tillmesh resolve data/hq/log.db catalog:B2 --action supersede --supersedes hq:7"
        ' --by "Ana" --reason "dated 2036 by a wrong clock"',
    )
    p.add_argument(
        "db",
        help="the replica's log.db (the replica must be stopped); HQ on PostgreSQL resolves"
        " through its API (POST /conflicts/ID/resolve), so a postgresql:// DSN is refused",
    )
    p.add_argument(
        "conflict_id", help="the id `tillmesh conflicts` shows, or catalog:SKU to supersede"
    )
    p.add_argument("--action", required=True, choices=_ACTIONS)
    p.add_argument("--by", required=True, help="who decides (name of the manager)")
    p.add_argument("--reason", required=True, help="why, in a few words")
    p.add_argument("--price", type=int, help="with choose_price: the price, in minor units")
    p.add_argument("--count", type=int, help="with recount: the units counted on the shelf")
    p.add_argument(
        "--supersedes",
        action="append",
        metavar="EVENT_ID",
        help="with supersede: a catalog write of the SKU (origin:seq) that loses to every"
        " other whatever its HLC, e.g. one dated far ahead (repeatable)",
    )
    p.add_argument("--replica", help="replica id owning the file (default: read from it)")
    p.add_argument("--json", action="store_true", help="print the appended events as JSON")
    _policies_arg(p)


def _policies_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policies",
        type=Path,
        help="policies file (TOML or JSON); default: the price policy the state was folded "
        "with, oversell=allow_and_report",
    )


def _policies(conn: sqlite3.Connection, path: Path | None) -> pol.Policies:
    if path is None:
        return pol.from_state(conn)
    policies = pol.load_policies(path)
    warning = pol.check_against_state(conn, policies)
    if warning:
        print(f"tillmesh: warning: {warning}", file=sys.stderr)
    return policies


def open_conflict_count(conn: sqlite3.Connection, policies: pol.Policies | None = None) -> int:
    """Open conflicts on a replica's database, for `tillmesh status`."""
    from conflict.detect import open_conflict_count as count

    return count(conn, policies or pol.from_state(conn))


def conflict_record(c: Conflict) -> dict[str, Any]:
    record: dict[str, Any] = msgspec.to_builtins(c)
    record["open"] = c.is_open
    if c.resolution is not None:
        record["resolution"]["time"] = format_hlc(c.resolution.hlc)
    for r, out in zip(c.superseded, record["superseded"], strict=True):
        out["time"] = format_hlc(r.hlc)
    return record


def cmd_conflicts(args: argparse.Namespace) -> int:
    if is_postgres(args.db):
        every, twins = _on_postgres(args)
    else:
        with closing(open_db(Path(args.db))) as conn:
            policies = _policies(conn, args.policies)
            every = find_conflicts(conn, policies, Path(args.db), recompute=args.recompute)
            if args.recompute and kept_differs(conn, policies, every):
                print("tillmesh: the oversell runs the fold keeps show other conflicts",
                      file=sys.stderr)  # fmt: skip
                return 1
            if args.recompute and recompute_from_events(conn, policies) != every:
                print("tillmesh: the events folded afresh show other conflicts", file=sys.stderr)
                return 1
            twins = equivocations(conn)
    if every is None:
        return 1
    kinds = set(args.kind or KINDS)
    found = [c for c in every if c.kind in kinds and (c.is_open or not args.open)]
    if args.json:
        records = [conflict_record(c) for c in found]
        print_json(records + [_equivocation_record(t) for t in twins])
        return 0
    for c in found:
        _print_conflict(c)
    for t in twins:  # not a business conflict to resolve: a replica that broke its chain
        print(f"equivocation  {t.origin}:{t.seq}  two versions signed by {t.origin}"
              f" (the second from {t.peer or '?'}, kept as evidence)")  # fmt: skip
    still_open = sum(c.is_open for c in found)
    extra = f", {len(twins)} equivocation(s)" if twins else ""
    print(f"{len(found)} conflict(s), {still_open} open{extra}")
    return 0


def _on_postgres(args: argparse.Namespace) -> tuple[list[Conflict] | None, list[Equivocated]]:
    """HQ's database: its events folded afresh (`replicas.hq.conflicts`); None if the
    oversell runs that fold keeps disagree with a full replay (`--recompute`)."""
    given = pol.load_policies(args.policies) if args.policies else None

    def read(conn: sqlite3.Connection) -> list[Conflict] | None:
        policies = given or pol.from_state(conn)
        every = find_conflicts(conn, policies, recompute=args.recompute)
        if args.recompute and kept_differs(conn, policies, every):
            print("tillmesh: the oversell runs the fold keeps show other conflicts",
                  file=sys.stderr)  # fmt: skip
            return None
        return every

    return pg_conflicts.read_folded(args.db, given, read), pg_conflicts.equivocations(args.db)


def _equivocation_record(t: Equivocated) -> dict[str, Any]:
    return {"id": f"equivocation:{t.origin}:{t.seq}", "kind": "equivocation", "open": True,
            "origin": t.origin, "seq": t.seq, "peer": t.peer, "detail": t.detail}  # fmt: skip


def _print_conflict(c: Conflict) -> None:
    status = "OPEN" if c.resolution is None else _decision(c.resolution)
    details = " ".join(f"{k}={v}" for k, v in sorted(c.details.items()))
    more = f" ... ({len(c.events)} events)" if len(c.events) > 6 else ""
    events = " ".join(c.events[:6]) + more
    subject = c.subject if c.store is None else f"{c.subject} @{c.store}"  # stock: per store
    print(f"{c.id}  {c.kind:20} {subject:16} {status}")
    print(f"    events: {events}")
    if details:
        print(f"    {details}")
    for r in c.superseded:  # a colleague's later decision: kept, shown, never applied
        print(f"    superseded: {_decision(r)}")


def _decision(r: Resolution) -> str:
    effect = f" [{r.effect}]" if r.effect else ""
    return f"{r.action}{effect} by {r.by} at {format_hlc(r.hlc)} ({r.event}): {r.reason}"


def _owner(path: Path) -> str:
    with closing(open_db(path)) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'replica_id'").fetchone()
    if row is None:
        raise StorageError(str(path), "no replica id recorded; give --replica")
    return str(row[0])


def cmd_resolve(args: argparse.Namespace) -> int:
    if is_postgres(args.db):
        raise pg_conflicts.no_local_resolve(args.conflict_id)
    args.db = Path(args.db)
    with closing(open_db(args.db)) as conn:
        policies = _policies(conn, args.policies)
        folded = pol.from_state(conn)
    replica = args.replica or _owner(args.db)
    ensure_stopped(args.db, "resolve through its HTTP API")
    events = asyncio.run(_resolve(args, replica, policies, folded))
    if args.json:
        print_json([event_record(ev) for ev in events])
        return 0
    print(f"resolved {args.conflict_id} ({args.action}) on {replica}: appended")
    for ev in events:
        print(f"  {ev.id:24} {ev.type}")
    print("the earliest resolution of a conflict is the effective one: `tillmesh conflicts`"
          " shows whether this one is, once the replicas have met")  # fmt: skip
    return 0


async def _resolve(
    args: argparse.Namespace, replica: str, policies: pol.Policies, folded: pol.Policies
) -> list[Event]:
    fold = StoreState(folded.price, folded.concurrency_window_ms)
    async with await EventLog.open(args.db, replica, fold) as log:
        return await resolve(
            log, policies, args.conflict_id, args.action, args.by, args.reason,
            price=args.price, count=args.count, supersedes=args.supersedes,
        )  # fmt: skip
