"""The design card's layout, checked: the four packages at the top level, imports that
point one way (`replicas` -> `broker`, `conflict`, `core`; `conflict` -> `core`; `core`
and `broker` import none of the others), and no import circle among modules.

Imports are read with `ast` from the source, so an import inside a function or under
`TYPE_CHECKING` counts like any other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "conflict", "broker", "replicas")
ALLOWED = {
    "core": {"core"},
    "conflict": {"conflict", "core"},
    "broker": {"broker"},
    "replicas": {"replicas", "broker", "conflict", "core"},
}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module `path` imports, absolute (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from replicas.cli import inspect` imports the module replicas.cli.inspect
            # (the package is already initialised by then); `from core.log import
            # EventLog` imports core.log.
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if _is_module(sub, root) else base)
    return out


def _is_module(name: str, root: Path) -> bool:
    path = root.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def rule_breaks(root: Path = ROOT) -> list[str]:
    """`module -> import` for each import that points the wrong way."""
    breaks = []
    for name, path in project_modules(root).items():
        layer = name.split(".")[0]
        for target in imported_modules(path, root):
            top = target.split(".")[0]
            if top in PACKAGES and top not in ALLOWED[layer]:
                breaks.append(f"{name} -> {target}")
    return sorted(breaks)


def import_cycles(root: Path = ROOT) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    modules = project_modules(root)
    graph = {
        name: sorted(t for t in imported_modules(path, root) if t in modules and t != name)
        for name, path in modules.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_the_card_top_level() -> None:
    for name in (*PACKAGES, "tests", "deploy", "docs", "pyproject.toml", "README.md"):
        assert (ROOT / name).exists(), name
    assert not (ROOT / "tillmesh").exists(), "the packages live at the top level now"


def test_imports_point_one_way() -> None:
    assert rule_breaks() == []


def test_no_import_circle() -> None:
    assert import_cycles() == []


# core is the log and its data: the network, HTTP and metrics stay outside it. The log
# tells observers what it did (core/observe.py) and the replica turns that into metrics.
EDGE_LIBRARIES = {"nats", "fastapi", "uvicorn", "httpx", "prometheus_client", "starlette"}


def test_core_and_conflict_import_no_network_or_metrics_library() -> None:
    found = {
        name: sorted(t for t in imported_modules(path) if t.split(".")[0] in EDGE_LIBRARIES)
        for name, path in project_modules().items()
        if name.split(".")[0] in ("core", "conflict")
    }
    assert {name: libs for name, libs in found.items() if libs} == {}


def test_replicas_has_rooms() -> None:
    rooms = {p.name for p in (ROOT / "replicas").iterdir() if (p / "__init__.py").exists()}
    assert {"api", "sync", "cli", "ops", "demo"} <= rooms
    flat = [p.stem for p in (ROOT / "replicas").glob("*.py") if "_" in p.stem.strip("_")]
    assert flat == [], "prefixed flat modules belong in a room"


def test_every_module_says_what_it_owns() -> None:
    silent = [
        name
        for name, path in project_modules().items()
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert silent == []


# --- the checks can fail ------------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("core/log.py", "from conflict.state import StoreState\n"),
        ("core/log.py", "import replicas.runtime\n"),
        ("broker/server.py", "from core.errors import TillmeshError\n"),
        ("conflict/state.py", "from replicas.api import app\n"),
        ("conflict/state.py", "def f():\n    from broker import subjects\n"),
    ],
)
def test_a_forbidden_import_is_caught(tmp_path: Path, where: str, line: str) -> None:
    root = _tree(tmp_path, {where: line})
    assert rule_breaks(root) != []


def test_an_allowed_import_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"replicas/sync/engine.py": "from core.events import Event\n"})
    assert rule_breaks(root) == []


def test_a_circle_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "replicas/cli/__init__.py": "",
            "replicas/cli/main.py": "from replicas.cli import inspect\n",
            "replicas/cli/inspect.py": "from replicas.cli.main import add_command\n",
        },
    )
    assert import_cycles(root) == [["replicas.cli.inspect", "replicas.cli.main"]]


ST_READ = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+st_\w+", re.IGNORECASE)


def state_sql_outside_conflict(root: Path = ROOT) -> list[str]:
    """Modules outside `conflict/` with SQL on the state's `st_` tables."""
    found = []
    for name, path in project_modules(root).items():
        if name.split(".")[0] == "conflict":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and ST_READ.search(text):
                found.append(f"{name}: {text.strip()[:60]}")
    return found


def test_only_conflict_reads_the_state_tables() -> None:
    assert state_sql_outside_conflict() == []


def test_state_sql_elsewhere_is_caught(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"replicas/api/sales.py": 'Q = "SELECT 1 FROM st_refunds"\n'})
    assert state_sql_outside_conflict(root) == ["replicas.api.sales: SELECT 1 FROM st_refunds"]


INSTALLERS = {"apt-get", "apt", "dpkg", "pip"}


def installs_from_tests(root: Path = ROOT) -> list[str]:
    """Test modules that run a package installer: set-up's job (the Makefile), never a
    test's (one upgraded systemd and perl on a developer's machine)."""
    found = []
    for path in sorted((root / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List | ast.Tuple) and node.elts:
                first = node.elts[0]
                program = first.value if isinstance(first, ast.Constant) else None
                words = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if program in INSTALLERS and "install" in words:
                    found.append(f"{path.relative_to(root)}: {' '.join(map(str, words))}")
    return found


def test_no_test_installs_packages() -> None:
    assert installs_from_tests() == []


def test_an_installing_test_is_caught(tmp_path: Path) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text(
        'CMD = ["apt-get", "install", "-y", "chromium"]\n'
    )
    assert installs_from_tests(tmp_path) == ["tests/test_x.py: apt-get install -y chromium"]


def imports_of_test_modules(root: Path = ROOT) -> list[str]:
    """Test modules imported by other modules: what tests share lives in a kit (or a
    conftest.py), so a test module is read alone and collected once."""
    found = []
    for path in sorted((root / "tests").rglob("*.py")):
        for target in imported_modules(path, root):
            if target.startswith("tests.") and target.rpartition(".")[2].startswith("test_"):
                found.append(f"{module_name(path, root)} -> {target}")
    return sorted(found)


def test_no_module_imports_a_test_module() -> None:
    assert imports_of_test_modules() == []


def test_an_import_of_a_test_module_is_caught(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "tests/__init__.py": "",
            "tests/core/__init__.py": "",
            "tests/core/test_a.py": "KEY = 1\n",
            "tests/core/test_b.py": "from tests.core.test_a import KEY\n",
            "tests/core/kit.py": "from tests.core import test_a\n",
        },
    )
    assert imports_of_test_modules(root) == [
        "tests.core.kit -> tests.core.test_a",
        "tests.core.test_b -> tests.core.test_a",
    ]
