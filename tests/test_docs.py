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


def layout_section(readme: str) -> str:
    return readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]


def unnamed_in_layout(root: Path = ROOT) -> list[str]:
    """What `replicas/` holds (modules, rooms) that the README's Layout does not name:
    a newcomer reads there what the parts of a replica are."""
    layout = layout_section((root / "README.md").read_text())
    parts = [p.name for p in (root / "replicas").glob("*.py") if p.name != "__init__.py"]
    parts += [f"{p.name}/" for p in (root / "replicas").iterdir() if (p / "__init__.py").exists()]
    return sorted(p for p in parts if not re.search(rf"(?<![\w/]){re.escape(p)}", layout))


def test_the_layout_names_every_part_of_a_replica() -> None:
    assert unnamed_in_layout() == []


def test_a_part_the_layout_leaves_out_is_caught(tmp_path: Path) -> None:
    (tmp_path / "replicas" / "sync").mkdir(parents=True)
    (tmp_path / "replicas" / "sync" / "__init__.py").write_text("")
    (tmp_path / "replicas" / "runtime.py").write_text("")
    (tmp_path / "replicas" / "signer.py").write_text("")
    readme = "# x\n\n## Layout\n  runtime.py  x\n  sync/  y\n\n## Next\nsigner.py\n"
    (tmp_path / "README.md").write_text(readme)
    assert unnamed_in_layout(tmp_path) == ["signer.py"]
