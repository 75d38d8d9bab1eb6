"""The `tillmesh` command line: a thin layer over the library.

Each command group lives in its own module and registers itself with `register()`.
Every command has `--help` with an example (a test walks the whole tree), prints
a clear one-line error instead of a traceback for anything tillmesh can name, and
exits 0 on success, 1 when it found a problem (verify, diff), 2 on an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from broker.errors import BrokerError
from core.errors import TillmeshError
from replicas import __version__
from replicas.cli import acquirer, conflicts, demo, inspect, ops, report, run, site, tokens
from replicas.cli.common import EXIT_ERROR, usage

__all__ = ["build_parser", "main"]

# In the order `tillmesh --help` lists them; `inspect` makes the `log` group that `ops`
# adds to, so it comes first.
COMMAND_MODULES = (site, run, tokens, inspect, ops, conflicts, report, demo, acquirer)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tillmesh",
        description="Offline-first point of sale: every till a replica, synced over NATS.",
        epilog="example:\n  tillmesh demo    # a store loses its network and keeps selling",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tillmesh {__version__}")
    parser.set_defaults(run=lambda args: usage(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except (TillmeshError, BrokerError) as e:
        print(f"tillmesh: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tillmesh log dump ... | head`: the reader has had enough
        _silence_stdout()  # as the Python docs advise (signal.SIGPIPE): quiet, but exit 1,
        return 1  # so a pipeline under `set -o pipefail` still sees the output was cut
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush of what is still
    buffered does not raise BrokenPipeError again on the way out."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
