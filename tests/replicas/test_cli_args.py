"""Arguments that used to be silently ignored or to misbehave: a usage error or a
one-line `tillmesh: error:` (exit 2), never an empty result or a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conflict.state import StoreState
from core.log import EventLog
from tests.factories import cash_sale
from tests.replicas.ops_kit import Built, at, cli


def usage_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """argparse's error for `argv`: exit 2, the message on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, *argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ")
    return err.splitlines()[-1]


def test_dump_takes_json_as_every_command_does(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    code, default, _ = cli(capsys, "log", "dump", db, "--origin", "s1/t1", "--from", "15")
    assert code == 0
    code, out, err = cli(capsys, "log", "dump", db, "--origin", "s1/t1", "--from", "15", "--json")
    assert (code, err) == (0, "") and out == default  # JSON lines, one event each
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["s1/t1:15", "s1/t1:16"]
    message = usage_error(capsys, "log", "dump", db, "--json", "--format", "table")
    assert "not allowed with argument --json" in message


def test_dump_from_without_origin_is_a_usage_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    message = usage_error(capsys, "log", "dump", built.db("s1/t1"), "--from", "5")
    assert message == "tillmesh log dump: error: --from needs --origin (seqs are per origin)"


@pytest.mark.parametrize("command", ["dump", "replay"])
def test_since_later_than_until_is_a_usage_error(
    built: Built, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["log", command, built.db("s1/t1"), "--since", at(30), "--until", at(10)]
    assert usage_error(capsys, *argv).endswith("error: --since must be earlier than --until")


def test_replay_since_later_than_the_upto_event_is_an_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["log", "replay", built.db("s1/t1"), "--upto", "s1/t1:3", "--since", at(30)]
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == "tillmesh: error: replay: --since is later than the event s1/t1:3\n"


def test_replay_of_a_store_the_log_does_not_hold_is_an_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["log", "replay", built.db("hq"), "--until", at(20), "--store", "s9"]
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        "tillmesh: error: replay: no events of store 's9' in this log (stores: hq, s1, s2)\n"
    )
    code, _, err = cli(capsys, "log", "replay", built.db("s1/t1"), "--until", at(20),
                       "--store", "s2")  # fmt: skip
    assert code == 2 and "(stores: hq, s1)" in err  # a till holds its own store only


def test_dump_of_an_unknown_event_type_is_an_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "log", "dump", built.db("s1/t1"), "--type", "nope")
    assert (code, out) == (2, "")
    assert err.startswith("tillmesh: error: dump: no event type 'nope' (known: ")
    assert "sale.completed" in err and err.count("\n") == 1


def test_export_of_an_origin_the_log_lacks_writes_nothing(
    built: Built, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "out" / "s9.tmx"
    out_file.parent.mkdir()
    argv = ["log", "export", built.db("hq"), "--origin", "s9/zz", "--out", out_file]
    code, out, err = cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == (
        "tillmesh: error: export: no events of origin 's9/zz' in this log "
        "(hq, s1/t1, s1/t2, s2/x1)\n"
    )
    assert list(out_file.parent.iterdir()) == []


def test_output_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`tillmesh log dump DB | head -1` ended with a BrokenPipeError traceback."""

    async def build() -> Path:
        async with await EventLog.open(tmp_path / "t1.db", "s1/t1", StoreState()) as log:
            await log.append_many([cash_sale(receipt=f"R{i}") for i in range(3000)])
        return tmp_path / "t1.db"

    db = asyncio.run(build())  # ~1 MB of JSON lines: far more than a pipe holds
    cmd = [sys.executable, "-m", "replicas.cli.main", "log", "dump", str(db)]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # what `head -1` does once it has its line
        err = proc.stderr.read().decode()
        code = proc.wait(timeout=60)
    assert first.startswith(b"{") and code == 1 and "Traceback" not in err, err
