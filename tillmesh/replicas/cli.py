"""The `tillmesh` command line: a thin layer over the library.

Each command group lives in its own module and registers itself with `register()`.
Every command has `--help` with an example (a test walks the whole tree), prints
a clear one-line error instead of a traceback for anything tillmesh can name, and
exits 0 on success, 1 when it found a problem (verify, diff), 2 on an error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from tillmesh import __version__
from tillmesh.broker.errors import BrokerError
from tillmesh.core.errors import TillmeshError

__all__ = ["Command", "add_command", "build_parser", "main", "positive_int"]

Command = Callable[[argparse.Namespace], int]
EXIT_ERROR = 2


def _subparser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, example: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    run: Command,
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    """A subcommand whose help ends with an example."""
    parser = _subparser(sub, name, summary, example)
    parser.set_defaults(run=run)
    return parser


def add_group(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str, example: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """A command with subcommands; run alone, it prints its help."""
    parser = _subparser(sub, name, summary, example)
    parser.set_defaults(run=lambda args: _usage(parser))
    return parser.add_subparsers(title="commands", metavar="COMMAND")


def positive_int(text: str) -> int:
    """argparse type: a whole number, 1 or more (a count of stores, tills, rows)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    from tillmesh.replicas import cli_inspect, cli_run

    parser = argparse.ArgumentParser(
        prog="tillmesh",
        description="Offline-first point of sale: every till a replica, synced over NATS.",
        epilog="example:\n  tillmesh demo    # a store loses its network and keeps selling",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tillmesh {__version__}")
    parser.set_defaults(run=lambda args: _usage(parser))
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (cli_run, cli_inspect, *_optional_modules()):
        module.register(sub)
    return parser


def _optional_modules() -> list[ModuleType]:
    """Command groups added by later work; absent ones are simply not offered."""
    import importlib

    found: list[ModuleType] = []
    for name in ("cli_ops", "cli_conflicts", "cli_report", "cli_demo"):
        try:
            found.append(importlib.import_module(f"tillmesh.replicas.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"tillmesh.replicas.{name}":
                raise
    return found


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
