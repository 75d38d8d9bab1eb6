"""Every console block of docs/ops.md is real output: each `$ tillmesh ...` line is run,
in order, on a copy of the ops kit's store day (`ops_kit.store_day`, the site the runbook
describes), and what it prints and its exit code must match the block.

The runbook's prose does a few things between commands (alters an export, moves a dead
till's files aside); `BETWEEN` does them here, before the command they precede.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

from replicas.cli.main import main
from tests.replicas.ops_kit import Built, store_day, with_site

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "ops.md"
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


# A resolution records when it was made: the runbook's run and this one differ there only.
_RESOLVED_AT = re.compile(r"(by \w+ at )\d{4}-\d\d-\d\dT[\d:.]+\+00:00")


def _now_free(text: str) -> str:
    return _RESOLVED_AT.sub(r"\1<when>", text)


def console_blocks(text: str) -> list[tuple[str, str, int]]:
    """(command, expected output, exit code) of each `$` command, in order."""
    out = []
    for block in BLOCK.findall(text):
        for part in re.split(r"^(?=\$ )", block, flags=re.M):
            if not part.startswith("$ "):
                continue
            command, _, rest = part.partition("\n")
            body, code = re.fullmatch(r"(.*?)\[exit (\d+)\]\n?", rest, re.S).groups()
            out.append((command[2:], body, int(code)))
    return out


def _lose_a_row_of_t2(root: Path) -> None:
    """'Here a copy of s1-t2.db lost the row of s1/t1:7' (the intact file is kept)."""
    shutil.copy(root / "s1-t2.db", root / "s1-t2.db.intact")
    with closing(sqlite3.connect(root / "s1-t2.db")) as conn, conn:
        conn.execute("DELETE FROM events WHERE origin = 's1/t1' AND seq = 7")


def _put_t2_back(root: Path) -> None:
    (root / "s1-t2.db.intact").replace(root / "s1-t2.db")


def _sync_s2_to_hq(root: Path) -> None:
    """'after HQ and s2/x1 synced (export, then import, as above)'."""
    assert main(["log", "export", "s2-x1.db", "--out", "s2-usb.tmx"]) == 0
    assert main(["log", "import", "s2-usb.tmx", "hq.db"]) == 0


def _alter_export(root: Path) -> None:
    data = bytearray((root / "s1-usb.tmx").read_bytes())
    data[-1] ^= 0xFF
    (root / "bad.tmx").write_bytes(bytes(data))


def _move_dead_till_aside(root: Path) -> None:
    (root / "dead").mkdir()
    for path in root.glob("s1-t1.db*"):
        path.rename(root / "dead" / path.name)


# (command, its occurrence in the runbook) -> what the prose before it does
BETWEEN: dict[tuple[str, int], Callable[[Path], None]] = {
    ("tillmesh log diff s1-t1.db s1-t2.db --verify", 1): _lose_a_row_of_t2,
    ("tillmesh log export s1-t1.db --out s1-usb.tmx", 1): _put_t2_back,
    ("tillmesh conflicts hq.db --open", 1): _sync_s2_to_hq,
    ("tillmesh log import bad.tmx hq.db", 1): _alter_export,
    ("tillmesh log restore s1-t1.db --from hq.db --replica s1/t1", 2): _move_dead_till_aside,
}


def run_runbook(root: Path, blocks: list[tuple[str, str, int]]) -> list[tuple[str, int]]:
    """Each block's command run in `root` (in order, with the prose's steps between):
    what it printed (stdout, then stderr) and its exit code."""
    seen: dict[str, int] = {}
    results = []
    with contextlib.chdir(root), _columns(100):
        for command, _, _ in blocks:
            seen[command] = seen.get(command, 0) + 1
            if (prep := BETWEEN.get((command, seen[command]))) is not None:
                with contextlib.redirect_stdout(io.StringIO()):
                    prep(root)
            argv = shlex.split(command)
            assert argv[0] == "tillmesh", command
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv[1:])
            results.append((out.getvalue() + err.getvalue(), code))
    return results


@contextlib.contextmanager
def _columns(width: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def test_the_runbook_is_real_output(built: Built) -> None:
    blocks = console_blocks(RUNBOOK.read_text())
    assert len(blocks) > 20
    mismatches = []
    for (command, expected, code), (got, got_code) in zip(
        blocks, run_runbook(built.root, blocks), strict=True
    ):
        if (got_code, _now_free(got)) != (code, _now_free(expected)):
            said = f"--- runbook [exit {code}]\n{expected}"
            mismatches.append(f"$ {command}\n{said}--- real [exit {got_code}]\n{got}")
    hint = "regenerate with: .venv/bin/python -m tests.replicas.test_docs_ops"
    assert not mismatches, "\n\n".join([*mismatches, hint])


def rewrite(text: str, results: list[tuple[str, int]]) -> str:
    """`text` with each console command's output replaced by `results`, in order."""
    outputs = iter(results)

    def block(m: re.Match[str]) -> str:
        parts = re.split(r"^(?=\$ )", m.group(1), flags=re.M)
        lines = []
        for part in parts:
            if part.startswith("$ "):
                out, code = next(outputs)
                lines.append(f"{part.partition(chr(10))[0]}\n{out}[exit {code}]\n")
            else:
                lines.append(part)
        return "```console\n" + "".join(lines) + "```"

    return BLOCK.sub(block, text)


def test_a_wrong_block_is_caught() -> None:
    (block,) = console_blocks("```console\n$ tillmesh x\nhello\n[exit 1]\n```\n")
    assert block == ("tillmesh x", "hello\n", 1)


if __name__ == "__main__":  # rewrite docs/ops.md from a fresh run (when output changes)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        with_site(site, store_day)
        text = RUNBOOK.read_text()
        blocks = console_blocks(text)
        results = [  # keep what differs only in the moment a resolution was made
            (out, code) if _now_free(out) != _now_free(was) else (was, code)
            for (_, was, _), (out, code) in zip(blocks, run_runbook(site, blocks), strict=True)
        ]
        RUNBOOK.write_text(rewrite(text, results))
    print(f"rewrote {RUNBOOK}")
