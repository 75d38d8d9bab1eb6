"""What every ops command in the `log` group shares: the group itself (made by
`cli_inspect`), a subcommand with `--json` whose SQLite errors come out as tillmesh
errors, and a progress bar shown only on a terminal.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeAlias

from tillmesh.core.sqlite import translate
from tillmesh.replicas.cli import add_command

__all__ = ["SubParsers", "check_args", "log_command", "log_group", "progress_bar", "time_order"]

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def log_group(sub: SubParsers) -> SubParsers:
    """The `log` group's subcommands, as registered by cli_inspect."""
    parser = sub.choices["log"]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the log command group has no subcommands")  # a wiring bug


def log_command(
    logs: SubParsers,
    name: str,
    run: Callable[[argparse.Namespace], int],
    summary: str,
    example: str,
) -> argparse.ArgumentParser:
    """A `log` subcommand with `--json`, its SQLite errors translated."""
    p = add_command(logs, name, _translated(run), summary, example)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def check_args(
    parser: argparse.ArgumentParser, check: Callable[[argparse.Namespace], str | None]
) -> None:
    """Run `check` on the parsed arguments before the command; a message it returns is a
    usage error, reported as argparse reports its own (usage, `error:`, exit 2). For
    combinations argparse cannot express, e.g. an option that needs another."""
    run: Callable[[argparse.Namespace], int] = parser.get_default("run")

    def checked(args: argparse.Namespace) -> int:
        problem = check(args)
        if problem is not None:
            parser.error(problem)
        return run(args)

    parser.set_defaults(run=checked)


def time_order(args: argparse.Namespace) -> str | None:
    """`--since` must come before `--until`: else the window is empty, and that is a typo."""
    since, until = getattr(args, "since", None), getattr(args, "until", None)
    if since is not None and until is not None and since >= until:
        return "--since must be earlier than --until"
    return None


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
