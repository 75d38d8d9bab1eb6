"""The wheel runs as installed: built by `make wheel` from (a copy of) this checkout,
installed into a fresh venv without extras (as `deploy/README.md` tells store IT),
every command's `--help`, a site made with `tillmesh site init`, the till's share of
it bundled and installed into a folder of its own, and a till (from there) and HQ from
that venv that replicate one sale. Also: every module the packages import is a runtime
dependency.

The fresh venv downloads the runtime dependencies from the package index (pip's cache
makes later runs quick), so this is the slowest test outside e2e (~1 min).
"""

from __future__ import annotations

import ast
import asyncio
import shutil
import subprocess
import sys
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.cli_tree import command_paths
from tests.e2e.harness import running_mesh, wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "conflict", "broker", "replicas")
NOT_SOURCE = (".git", ".venv", "data", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


def third_party_imports() -> set[str]:
    """Top-level names of every non-stdlib, non-project module the packages import."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - set(PACKAGES)


def runtime_distributions() -> set[str]:
    """The distributions tillmesh needs with no extras."""
    out = set()
    for text in requires("tillmesh") or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.add(req.name.lower().replace("_", "-"))
    return out


def test_every_import_is_a_runtime_dependency() -> None:
    providers = packages_distributions()
    runtime = runtime_distributions()
    missing = {
        name: providers.get(name)
        for name in third_party_imports()
        if not {d.lower().replace("_", "-") for d in providers.get(name, [])} & runtime
    }
    assert missing == {}, "imported by the packages but only a test extra (or not declared)"


@pytest.fixture(autouse=True)
def _checkout_not_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed commands import the wheel: a PYTHONPATH naming a checkout (as when
    running tests from a worktree) would have them run that checkout instead."""
    monkeypatch.delenv("PYTHONPATH", raising=False)


def run(argv: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(argv)}: exit {done.returncode}\n{done.stderr[-2000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and its runtime dependencies only; its bin folder."""
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: pip builds in the source tree (build/, *.egg-info), and the
    # checkout stays as it was.
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    # Built by `make wheel`, as the README's deployment steps build it, with the pip of
    # the venv running the tests (the Makefile's set-up stamp is given as done).
    stamp = work / "set-up.stamp"
    stamp.touch()  # newer than the copied pyproject.toml: make does not set up again
    bin_of_tests = Path(sys.executable).parent
    run(["make", "-C", str(source), "wheel", f"BIN={bin_of_tests}", f"STAMP={stamp}"], work)
    (wheel,) = (source / "dist").glob("tillmesh-*.whl")
    run([sys.executable, "-m", "venv", str(work / "venv")], work)
    bin_dir = work / "venv" / "bin"
    run([str(bin_dir / "pip"), "--disable-pip-version-check", "-q", "install", str(wheel)], work)
    return bin_dir


def test_the_installed_wheel_has_no_test_extras(installed: Path) -> None:
    listed = run([str(installed / "pip"), "list", "--format=freeze"], installed).stdout.lower()
    for extra in ("pytest", "hypothesis", "playwright", "mypy"):
        assert f"\n{extra}==" not in f"\n{listed}"
    where = [str(installed / "python"), "-c", "import core, replicas; print(replicas.__file__)"]
    assert "site-packages" in run(where, installed).stdout  # the wheel, not this checkout


def test_every_command_helps_as_installed(installed: Path, tmp_path: Path) -> None:
    tillmesh = str(installed / "tillmesh")
    assert "Offline-first" in run([tillmesh, "--help"], tmp_path).stdout
    paths = [path for path in command_paths() if path]
    assert len(paths) > 20
    for path in paths:
        out = run([tillmesh, *path, "--help"], tmp_path).stdout
        assert "example:" in out, f"tillmesh {' '.join(path)} --help has no example"


async def test_an_installed_till_and_hq_replicate_a_sale(installed: Path, tmp_path: Path) -> None:
    """deploy/README's path on one machine: `site init` where the site is made, `site
    bundle` for the till, `site install` into the till machine's own folder, the till run
    from there (HQ from the site's), one sale at HQ, and `status` naming the uplink."""
    tillmesh = str(installed / "tillmesh")
    site, machine, bundle = tmp_path / "site", tmp_path / "till-machine", tmp_path / "b.tar.gz"
    run([tillmesh, "site", "init", "--data", str(site), "--stores", "1", "--tills", "1"], tmp_path)
    pack = ["site", "bundle", "--data", str(site), "--replica", "s1/t1", "--out", str(bundle)]
    run([tillmesh, *pack], tmp_path)
    installed_out = run(
        [tillmesh, "site", "install", str(bundle), "--data", str(machine)], tmp_path
    )
    assert "tillmesh till --data" in installed_out.stdout
    assert not (machine / "ca.key").exists() and not (machine / "hq").exists()
    options = {"tillmesh": [tillmesh], "site_made": True, "machines": {"s1/t1": machine}}
    async with running_mesh(tmp_path, {"s1": ["t1"]}, **options) as mesh:
        assert (machine / "s1" / "t1" / "log.db").exists()  # the till runs from its own folder
        assert not (site / "s1" / "t1" / "log.db").exists()
        page = await mesh.http.get(f"{mesh['s1/t1'].url}/")
        assert page.status_code == 200 and "<html" in page.text.lower()  # package data
        (sale_id,) = await mesh.sell("s1/t1")

        async def at_hq() -> bool:
            r = await mesh.http.get(f"{mesh['hq'].url}/sales/{sale_id}")
            return r.status_code == 200

        await wait_until(at_hq, "the sale at HQ", 60)
        status = [tillmesh, "status", "--data", str(machine), "--replica", "s1/t1"]

        async def uplink_named() -> bool:
            out = (await asyncio.to_thread(run, status, tmp_path)).stdout
            return "uplink    wan via hq (127.0.0.1:" in out

        await wait_until(uplink_named, "status to name the till's uplink", 20)
