"""`tillmesh log replay`: the events up to a point folded into a scratch state, printed
as a stream with running totals and the state as of then (library: `ops.replay`); and
`tillmesh log checkpoint`, which writes the checkpoints replay starts from
(`ops.checkpoints`).
"""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from conflict.stock import stock_store
from core.compact import read_heads
from core.events import HQ, parse_event_id, store_of
from replicas.cli.common import (
    SubParsers,
    check_args,
    event_record,
    format_hlc,
    log_command,
    parse_time,
    positive_int,
    print_json,
    progress_bar,
    time_order,
)
from replicas.errors import SelectsNothing
from replicas.ops.checkpoints import (
    DEFAULT_EVERY,
    DEFAULT_KEEP,
    build_checkpoints,
    checkpoint_dir,
    list_checkpoints,
    prune_checkpoints,
)
from replicas.ops.common import Cut, open_log, scope_of
from replicas.ops.replay import ReplayStep, event_cut, replay, replayed_store

__all__ = ["add_checkpoint", "add_replay", "cmd_checkpoint", "cmd_replay"]

END_OF_TIME = "\U0010ffff"
DEFAULT_LAST = 1000  # steps printed: what led up to the point, not a year of history


def add_replay(logs: SubParsers) -> None:
    p = log_command(
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
    p.add_argument(
        "--last",
        type=int,
        default=DEFAULT_LAST,
        metavar="N",
        help=f"print at most the last N events before the point (default {DEFAULT_LAST})",
    )
    p.add_argument("--state-only", action="store_true", help="print the final state only")
    check_args(p, time_order)


def cmd_replay(args: argparse.Namespace) -> int:
    scope = scope_of(None) if args.store is None else _store_scope(args.store)
    with closing(open_log(args.db)) as conn:
        cut = _cut(conn, args)
        _check_against_log(conn, args, cut)
        store = replayed_store(conn, args.store)
        last = 0 if args.state_only else args.last
        with progress_bar("replaying events") as progress:
            result = replay(
                conn, cut, scope, progress, store, log_path=args.db, since=args.since, last=last
            )
    steps = result.steps
    if args.json:
        # "stock" is the replayed store's (null at HQ without --store: no one store's
        # stock; "stock_by_store" has each store's apart)
        state: dict[str, Any] = {**result.state, "store": store}
        state["stock"] = None if store is None else result.stock[store]
        print_json(
            {
                "cut": _cut_record(cut),
                "events": [] if args.state_only else [_step_record(s) for s in steps],
                "state": state,
                "folded": result.folded,
                "checkpoint": None if result.checkpoint is None else result.checkpoint.events,
            }
        )
        return 0
    print(f"replay of {args.db} up to {_cut_text(args)}: {result.events} events")
    if result.checkpoint is not None:
        ck = result.checkpoint
        print(f"from the checkpoint at {ck.events} events, {result.folded} folded past it")
    if not args.state_only:
        _print_steps(steps)
    _print_state(result.state, result.stock)
    return 0


def _store_scope(store: str) -> Callable[[str], bool]:
    return lambda origin: origin == HQ or store_of(origin) == store


def _check_against_log(conn: sqlite3.Connection, args: argparse.Namespace, cut: Cut) -> None:
    """The argument errors only the log shows (--since before --until: `time_order`)."""
    if args.since is not None and args.since > cut[0]:
        raise SelectsNothing("replay", f"--since is later than the event {args.upto}")
    if args.store is not None:
        _check_store(conn, args.store)


def _check_store(conn: sqlite3.Connection, store: str) -> None:
    """A store the log holds no origin of would replay HQ's events alone: a typo."""
    stores = sorted({stock_store(origin) for origin in read_heads(conn)})
    if store not in stores:
        held = ", ".join(stores) or "none"
        raise SelectsNothing("replay", f"no events of store {store!r} in this log (stores: {held})")


def _cut(conn: Any, args: argparse.Namespace) -> Cut:
    if args.until is not None:
        return args.until - 1, END_OF_TIME, 1 << 62
    try:
        origin, seq = parse_event_id(args.upto)
    except ValueError:
        raise SelectsNothing("replay", f"--upto wants ORIGIN:SEQ, got {args.upto!r}") from None
    return event_cut(conn, origin, seq)


def _cut_text(args: argparse.Namespace) -> str:
    return f"{format_hlc(args.until)} (exclusive)" if args.until is not None else args.upto


def _cut_record(cut: Cut) -> dict[str, Any]:
    hlc, origin, seq = cut
    if origin == END_OF_TIME:
        return {"until_hlc": hlc + 1, "until": format_hlc(hlc + 1)}
    return {"upto": f"{origin}:{seq}", "hlc": hlc, "time": format_hlc(hlc)}


def _step_record(step: ReplayStep) -> dict[str, Any]:
    return {
        **event_record(step.event, step.flags),
        "time": format_hlc(step.event.hlc),
        "sales": step.sales,
        "gross": step.gross,
        "stock": step.stock,
    }


def _print_steps(steps: list[ReplayStep]) -> None:
    print(f"{'time':29} {'event':14} {'type':16} {'sales':>5} {'gross':>9}  stock after")
    for s in steps:
        stock = " ".join(f"{sku}={qty}" for sku, qty in s.stock.items())
        print(
            f"{format_hlc(s.event.hlc):29} {s.event.id:14} {s.event.type:16} "
            f"{s.sales:>5} {s.gross:>9}  {stock}"
        )


def _print_state(state: dict[str, Any], stock: dict[str, dict[str, int]]) -> None:
    sales = state["sales"]
    print(f"state    digest {state['digest'][:16]}")
    print(
        f"sales    {sales['sales']}  gross {sales['gross']}  voided {sales['voided']}  "
        f"refunded {sales['refunded']}  net {sales['net']}"
    )
    if not any(stock.values()):
        print("stock    -")
        return
    # One row per (store, SKU): a store of 240 SKUs was one line; never a sum over stores.
    width = max(3, *(len(sku) for levels in stock.values() for sku in levels))
    print(f"stock    {'store':8} {'sku':{width}} {'on hand':>8}")
    for store, levels in stock.items():
        for sku, qty in levels.items():
            print(f"         {store:8} {sku:{width}} {qty:>8}")


def add_checkpoint(logs: SubParsers) -> None:
    p = log_command(
        logs,
        "checkpoint",
        cmd_checkpoint,
        "Write replay checkpoints (the state every N events of history) beside the log, "
        "continuing from the newest; a replay then folds only what lies past one.",
        "tillmesh log checkpoint data/s1/t3/log.db --every 250000 --keep 10",
    )
    p.add_argument("db", type=Path)
    p.add_argument(
        "--every",
        type=positive_int,
        default=DEFAULT_EVERY,
        help=f"events between two checkpoints (default {DEFAULT_EVERY:,})",
    )
    p.add_argument(
        "--keep",
        type=positive_int,
        help="then keep at most N, spread over the history (a running replica keeps"
        f" {DEFAULT_KEEP}); default: keep every one",
    )
    p.add_argument("--list", action="store_true", help="only list the checkpoints there are")


def cmd_checkpoint(args: argparse.Namespace) -> int:
    with closing(open_log(args.db)) as conn:
        written = []
        if not args.list:
            with progress_bar("folding events") as progress:
                written = build_checkpoints(conn, args.db, args.every, progress)
    if args.keep is not None and not args.list:
        prune_checkpoints(args.db, args.keep)
    every = list_checkpoints(args.db)
    if args.json:
        listed = [{**vars(c), "path": str(c.path)} for c in every]
        print_json({"written": [c.events for c in written], "checkpoints": listed})
        return 0
    if not args.list:
        print(f"wrote {len(written)} checkpoint(s) in {checkpoint_dir(args.db)}")
    print(f"{'events':>12} {'up to':29} {'MB':>8}  file")
    for c in every:
        size = c.path.stat().st_size / 1e6
        print(f"{c.events:>12} {format_hlc(c.top[0]):29} {size:>8.1f}  {c.path.name}")
    return 0
