"""The `tillmesh` command tree, walked from the real parser (helpers, no tests)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from replicas.cli.main import build_parser

__all__ = ["command_paths"]


def _walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, (*path, name))


def command_paths() -> list[tuple[str, ...]]:
    """Every command at every level as argv prefixes: (), ("log",), ("log", "dump"), ..."""
    return [path for path, _ in _walk(build_parser(), ())]
