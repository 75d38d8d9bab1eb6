"""Every read-only ops command on databases in a read-only folder (ops.md: files
"copied or mounted read-only"), run as an unprivileged user so 0555 really binds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.replicas.ops_kit import Built, at
from tests.unprivileged import run_unprivileged

# Runs each argv through the real CLI entry point in one interpreter; prints
# [[exit code, stdout, stderr], ...] as JSON.
RUNNER = """
import contextlib, io, json, sys
from replicas.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    results.append([code, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def run_cli_unprivileged(cwd: Path, commands: list[list[str]]) -> list[tuple[int, str, str]]:
    code = RUNNER.replace("json.loads(sys.argv[1])", repr(commands))
    result = run_unprivileged(code, cwd)
    assert result.returncode == 0, result.stderr
    return [tuple(r) for r in json.loads(result.stdout)]


def test_read_only_commands_work_on_a_read_only_folder(
    pristine_site: Built, shared_dir: Path
) -> None:
    ro, rw = shared_dir / "ro", shared_dir / "rw"
    ro.mkdir()
    rw.mkdir()
    for db in [*pristine_site.root.glob("*.db"), pristine_site.root / "site.json"]:
        shutil.copy(db, ro / db.name)  # site.json: the keys that check signatures
        (ro / db.name).chmod(0o444)
    shutil.copy(ro / "s1-t2.db", rw / "s1-t2.db")
    (rw / "s1-t2.db").chmod(0o666)
    ro.chmod(0o555)
    rw.chmod(0o777)  # the unprivileged user's own workspace: exports, restores, compaction
    commands = {
        "stats": ["log", "stats", "ro/s1-t1.db"],
        "verify": ["log", "verify", "ro/s1-t1.db"],
        "state": ["state", "ro/hq.db"],
        "conflicts": ["conflicts", "ro/hq.db"],
        "dump": ["log", "dump", "ro/s1-t1.db", "--origin", "s1/t1", "--from", "15"],
        "replay": ["log", "replay", "ro/s1-t1.db", "--until", at(20), "--state-only"],
        "diff": ["log", "diff", "ro/s1-t1.db", "ro/s1-t2.db"],
        "export": ["log", "export", "ro/s1-t1.db", "--out", "rw/s1.tmx"],
        "compact": ["log", "compact", "rw/s1-t2.db", "--peers-vv", "ro/hq.db", "ro/s1-t1.db"],
        "restore": [
            "log",
            "restore",
            "rw/t1.db",
            "--from",
            "ro/hq.db",
            "--replica",
            "s1/t1",
            "--site",
            "ro",
        ],
    }
    outcomes = run_cli_unprivileged(shared_dir, list(commands.values()))
    results = dict(zip(commands, outcomes, strict=True))
    for name, (code, out, err) in results.items():
        assert (code, err) == (0, ""), (name, out, err)
    assert results["verify"][1].endswith(": 32 events from 3 origins: OK\n")
    assert results["diff"][1].splitlines()[-1] == "SAME"
    assert "dropped 24 events, kept 8; verify OK" in results["compact"][1]  # HQ lacks some
    assert "next append is s1/t1:13" in results["restore"][1]
    assert (rw / "s1.tmx").exists() and (rw / "t1.db").exists()
    originals = sorted([*(db.name for db in pristine_site.root.glob("*.db")), "site.json"])
    assert sorted(p.name for p in ro.iterdir()) == originals  # nothing created beside them
