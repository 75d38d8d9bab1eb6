"""`tillmesh demo`: the command and its flags; the run and its screen are
`replicas.demo.console`, imported only when a demo runs (it pulls in the whole demo
stack, which every other `tillmesh` command would otherwise pay for at start-up).

`--lan` runs the site on emulated machines (`replicas.demo.lan`): it needs root, and is
refused (exit 2, nothing made) where network namespaces cannot be made.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from replicas.cli.common import add_command, positive_int

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sub,
        "demo",
        cmd_demo,
        "Run HQ and stores x tills as real processes, sell through real faults "
        "(store 1 cut from HQ, HQ down, a till's network frozen, a till killed), "
        "then prove convergence.",
        "tillmesh demo --data data --seed 7 --duration 36",
    )
    p.add_argument(
        "--data",
        type=Path,
        default=Path("data"),
        help="folder for the site (a previous demo's is wiped; nothing else is)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of every workload choice")
    p.add_argument(
        "--duration",
        type=float,
        default=36.0,
        help="seconds of selling, spread over the phases (default 36: about 50 s in all)",
    )
    p.add_argument("--stores", type=positive_int, default=2, help="number of stores (default 2)")
    p.add_argument("--tills", type=positive_int, default=3, help="tills per store (default 3)")
    p.add_argument(
        "--products", type=positive_int, default=240, help="HQ's catalog size (default 240)"
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="leave every replica running afterwards, for the ops tools and a browser "
        "(with --lan: in the foreground, until Ctrl-C)",
    )
    p.add_argument(
        "--hq-db",
        metavar="postgresql|DSN",
        help="HQ on PostgreSQL instead of its SQLite log: 'postgresql' starts a throwaway "
        "server in --data (Debian's postgresql-15, run as the postgres user), or give the "
        "postgresql://... DSN of an empty database; the proof then reads that database",
    )
    p.add_argument(
        "--lan",
        action="store_true",
        help="needs root: every replica on an emulated machine of its own (a network "
        "namespace), 3 HQ machines, stores with a WAN and an LTE uplink; the story cuts "
        "store 1's WAN, then its LTE, pulls a till's cable and loses an HQ machine",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    if args.duration <= 0:  # the counts are checked by positive_int as they are parsed
        raise SystemExit("tillmesh: error: --duration must be > 0")
    if args.lan and (args.stores > 99 or args.tills > 200):  # 10.77.<store>.<11 + till>
        raise SystemExit("tillmesh: error: --lan takes at most 99 stores of 200 tills")
    if args.hq_db is not None and args.lan:
        raise SystemExit("tillmesh: error: --hq-db runs without --lan")
    from replicas.demo.console import run_demo
    from replicas.demo.lan.story import unavailable
    from replicas.hq.connect import is_postgres

    if args.hq_db not in (None, "postgresql") and not is_postgres(args.hq_db):
        raise SystemExit("tillmesh: error: --hq-db is 'postgresql' or a postgresql:// DSN")
    if args.lan and (why := unavailable()) is not None:  # before --data is touched
        print(f"tillmesh: error: demo --lan cannot run here: {why}", file=sys.stderr)
        return 2
    return run_demo(args)
