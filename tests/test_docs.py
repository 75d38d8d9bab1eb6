"""The docs keep up with the code: every `tillmesh` command is documented, and every
repository path the README and runbooks name exists (as sqlite-utils' docs test does)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli_tree import command_paths

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "ops.md", ROOT / "deploy" / "README.md"]
TOP = ("core", "conflict", "broker", "replicas", "tests", "deploy", "docs")
PATH = re.compile(rf"(?<![\w/.-])((?:{'|'.join(TOP)})/[\w./@-]*[\w/])")


def _text() -> str:
    return "\n".join(doc.read_text() for doc in DOCS)


@pytest.mark.parametrize("path", [p for p in command_paths() if p], ids=" ".join)
def test_every_command_is_documented(path: tuple[str, ...]) -> None:
    assert f"tillmesh {' '.join(path)}" in _text(), "document it in docs/ops.md or the README"


def named_paths(text: str) -> set[str]:
    return {m.rstrip("/.") for m in PATH.findall(text)}


def test_every_path_the_docs_name_exists() -> None:
    named = named_paths(_text())
    assert len(named) > 10
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert missing == []


def test_a_stale_path_is_caught() -> None:
    assert named_paths("see `replicas/sync.py` and tillmesh/core/log.py") == {"replicas/sync.py"}


def test_the_demo_help_and_the_readme_give_one_duration() -> None:
    """They said 'about 75 s' and 'about a minute'; a run takes about 50 s."""
    from replicas.cli.main import build_parser

    demo = build_parser()._subparsers._group_actions[0].choices["demo"]  # type: ignore[union-attr]
    said_by_help = re.findall(r"about (\d+) s", demo.format_help().replace("\n", " "))
    said_by_readme = re.findall(r"about (\d+) s\)", (ROOT / "README.md").read_text())
    assert said_by_help and said_by_help == said_by_readme[:1], (said_by_help, said_by_readme)


def system_deps(makefile: str) -> list[str]:
    """The Debian packages the Makefile's SYSTEM_DEPS installs (`package:path` pairs)."""
    value = re.search(r"^SYSTEM_DEPS\s*:=\s*((?:.*\\\n)*.*)$", makefile, re.MULTILINE)
    assert value, "no SYSTEM_DEPS in the Makefile"
    return [pair.split(":")[0] for pair in value.group(1).replace("\\\n", " ").split()]


def test_the_readme_names_what_set_up_installs() -> None:
    """Set-up installs the browser, faketime and PostgreSQL where missing (a test once ran
    apt-get itself); a developer reads in the README what `make test` will install."""
    packages = system_deps((ROOT / "Makefile").read_text())
    assert {"chromium", "faketime"} <= set(packages)
    readme = (ROOT / "README.md").read_text()
    assert [p for p in packages if f"`{p}`" not in readme] == []
