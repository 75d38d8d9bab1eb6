"""What every `tillmesh` command module shares: the one way to add a command (its help
ends with an example), argument types, the `log` group's subcommand helper (`--json`,
SQLite errors as tillmesh errors), JSON output and a progress meter on stderr
for runs over a second.

Command modules import from here, never from `main`; `main` imports them all, so the
modules form no circle.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias

import msgspec

from core.clock import hlc_ms, pack
from core.errors import StorageError, TillmeshError
from core.events import Event, decode_body
from core.sqlite import open_sync, translate

__all__ = [
    "EXIT_ERROR",
    "Command",
    "SubParsers",
    "add_command",
    "add_group",
    "check_args",
    "event_record",
    "format_hlc",
    "jsonable",
    "log_command",
    "log_group",
    "open_db",
    "parse_time",
    "positive_int",
    "print_json",
    "progress_bar",
    "time_order",
    "usage",
]

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
    parser.set_defaults(run=lambda args: usage(parser))
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


def usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR


SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def log_group(sub: SubParsers) -> SubParsers:
    """The `log` group's subcommands, as registered by cli.inspect."""
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


class _Meter:
    """Counts work done; after the first second, shows it on stderr about once a second:
    one line rewritten in place on a terminal, a line each time otherwise (a log file)."""

    def __init__(self, label: str, total: int | None, clock: Callable[[], float]) -> None:
        self.label, self.total, self.clock = label, total, clock
        self.done, self.start = 0, clock()
        self.next_show = self.start + 1.0
        self.tty = sys.stderr.isatty()
        self.shown = False

    def advance(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now >= self.next_show:
            self.next_show = now + 1.0
            self._show(now)

    def _show(self, now: float) -> None:
        of = f"/{self.total:,}" if self.total else ""
        text = f"{self.label}: {self.done:,}{of} ({now - self.start:.0f} s)"
        sys.stderr.write(f"\r{text}\033[K" if self.tty else text + "\n")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\r\033[K")  # the command's output follows on a clean line
            sys.stderr.flush()


@contextmanager
def progress_bar(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Progress of a long run on stderr, shown only once it has taken a second: stdout
    stays the command's output, and a quick run prints nothing extra."""
    meter = _Meter(label, total, time.monotonic)
    try:
        yield meter.advance
    finally:
        meter.close()


def open_db(path: Path) -> sqlite3.Connection:
    """A read-only connection to a replica database, with a clear error if it is not one."""
    conn = open_sync(path, readonly=True)
    try:
        conn.execute("SELECT 1 FROM heads LIMIT 1")
    except sqlite3.Error as e:
        conn.close()
        raise StorageError(str(path), "not a tillmesh log (no heads table)") from e
    return conn


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=jsonable) + "\n")


def jsonable(value: object) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return msgspec.to_builtins(value)


def event_record(ev: Event, flags: int = 0) -> dict[str, Any]:
    """An event as plain JSON-able data, body decoded when this build knows its type."""
    record: dict[str, Any] = {
        "id": ev.id,
        "origin": ev.origin,
        "seq": ev.seq,
        "hlc": ev.hlc,
        "type": ev.type,
        "schema": ev.schema,
        "prev": ev.prev.hex(),
        "flags": flags,
    }
    try:
        record["body"] = msgspec.to_builtins(decode_body(ev))
    except TillmeshError as e:
        record["body_error"] = str(e)
    return record


def parse_time(text: str) -> int:
    """ISO 8601 -> the smallest HLC at that wall time (ms << 16)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from e
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return pack(int(moment.timestamp() * 1000), 0)


def format_hlc(hlc: int) -> str:
    return datetime.fromtimestamp(hlc_ms(hlc) / 1000, UTC).isoformat(timespec="milliseconds")
