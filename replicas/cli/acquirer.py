"""`tillmesh acquirer`: the demo's card acquirer as a process of its own
(`replicas.payments.acquirer`), for the demo, the tests and trying tillmesh out."""

from __future__ import annotations

import argparse
from pathlib import Path

from replicas.cli.common import SubParsers, add_command

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    p = add_command(
        sub,
        "acquirer",
        _run,
        "Run a small card acquirer (authorise, capture, reverse, idempotent by key) for"
        " the demo and tests; prints its URL and writes it to <data>/acquirer.url. Calls"
        " carry its API key (Authorization: Bearer), made at first start in"
        " <data>/acquirer.key unless --api-key-file names another file; tills read it from"
        " the site's acquirer_key_file.",
        "tillmesh acquirer --data data/acquirer --port 8700 --decline-tokens decline",
    )
    p.add_argument("--data", type=Path, required=True, help="folder for acquirer.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    p.add_argument("--decline-tokens", default="", help="decline tokens matching this regex")
    p.add_argument("--decline-over", type=int, default=None, help="decline above (minor units)")
    p.add_argument("--decline-rate", type=float, default=0.0, help="share declined, by seed")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--slow-tokens", default="", help="answer these tokens after --slow-s")
    p.add_argument("--slow-s", type=float, default=30.0)
    p.add_argument(
        "--api-key-file", type=Path, default=None,
        help="the API key calls must carry (made if missing; default <data>/acquirer.key)",
    )  # fmt: skip


def _run(args: argparse.Namespace) -> int:
    from replicas.payments.acquirer import Behaviour
    from replicas.payments.service import serve_acquirer

    behaviour = Behaviour(
        decline_tokens=args.decline_tokens, decline_over=args.decline_over,
        decline_rate=args.decline_rate, seed=args.seed, slow_tokens=args.slow_tokens,
        slow_s=args.slow_s,
    )  # fmt: skip
    serve_acquirer(args.data, args.host, args.port, behaviour, args.api_key_file)
    return 0
