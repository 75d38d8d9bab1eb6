"""`log export` / `log import`: a week of sales to HQ on a USB stick; bad input refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from core.portable import ExportDigestMismatch, read_export
from tests.replicas.ops_kit import Built, at, cli, cli_json, count_events, digest


def test_export_then_import_makes_hq_agree_and_twice_is_a_no_op(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    usb = tmp_path / "s1.tmx"
    code, out = cli_json(capsys, "log", "export", built.db("s1/t1"), "--out", usb)
    assert code == 0
    assert out["header"]["count"] == count_events(built.db("s1/t1"))
    header, raws = read_export(usb)
    assert header.source == "s1/t1" and len(raws) == header.count

    hq = built.db("hq")
    code, first = cli_json(capsys, "log", "import", usb, hq, "--replica", "hq")
    assert code == 0
    assert first["accepted"] == 4 + 3  # what HQ missed of t1 and t2 while cut off
    assert first["rejected"] == [] and first["held"] == 0

    code, again = cli_json(capsys, "log", "import", usb, hq)
    assert code == 0
    assert (again["accepted"], again["duplicates"]) == (0, header.count)

    # HQ now holds store s1's events exactly as the till does
    code, diff = cli_json(capsys, "log", "diff", built.db("s1/t1"), hq)
    assert code == 0 and not diff["differs"]
    assert diff["state"]["digest_a"] == diff["state"]["digest_b"] == digest(built.db("s1/t1"))


def test_export_since_and_origin_are_contiguous_runs_to_the_head(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    usb = tmp_path / "t2.tmx"
    code, out = cli_json(
        capsys, "log", "export", built.db("s1/t1"), "--out", usb,
        "--origin", "s1/t2", "--since", at(30),
    )  # fmt: skip
    assert code == 0
    assert out["header"]["ranges"] == [["s1/t2", 11, 14]]
    code, text, _ = cli(capsys, "log", "import", usb, built.db("hq"))
    assert code == 0 and "accepted 3  duplicates 1" in text


def test_import_into_a_till_skips_other_stores(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    usb = tmp_path / "hq.tmx"
    cli(capsys, "log", "export", built.db("hq"), "--out", usb)
    code, out = cli_json(capsys, "log", "import", usb, built.db("s1/t2"))
    assert code == 0
    assert out["out_of_scope"] == count_events(built.db("hq"), "WHERE origin LIKE 's2/%'")
    assert out["accepted"] == 0 and out["rejected"] == []


def test_a_tampered_export_is_refused_before_anything_is_ingested(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    usb = tmp_path / "s1.tmx"
    cli(capsys, "log", "export", built.db("s1/t1"), "--out", usb)
    data = bytearray(usb.read_bytes())
    data[-40] ^= 0x01  # one bit in the last event
    usb.write_bytes(bytes(data))
    with pytest.raises(ExportDigestMismatch):
        read_export(usb)
    before = count_events(built.db("hq"))
    code, out, err = cli(capsys, "log", "import", usb, built.db("hq"))
    assert code == 2 and out == ""
    assert err.startswith("tillmesh: error: ") and "digest" in err and err.count("\n") == 1
    assert count_events(built.db("hq")) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "bad magic"),
        (b"TILLMESH-EXPORT\n\x00\x00\x00\x05abc", "truncated export header"),
        (b"hello world, not an export at all", "bad magic"),
    ],
)
def test_garbage_export_files_give_one_line_errors(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.tmx"
    bad.write_bytes(content)
    code, _, err = cli(capsys, "log", "import", bad, built.db("hq"))
    assert code == 2 and message in err and err.count("\n") == 1


def test_wrong_locked_or_corrupt_databases_give_one_line_errors(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.close()
    missing = tmp_path / "missing.db"
    cases = [
        (["log", "replay", junk, "--until", at(1)], "not a database"),
        (["log", "diff", built.db("hq"), other], "not a tillmesh log"),
        (["log", "export", missing, "--out", tmp_path / "x"], "no such database"),
        (["log", "compact", built.db("s1/t1"), "--peers-vv", junk], "neither a replica"),
        (["log", "rebuild", other], "not a tillmesh log"),
        (["log", "import", tmp_path / "nope.tmx", built.db("hq")], "No such file"),
        (["log", "restore", tmp_path / "new.db", "--from", junk, "--replica", "s1/t1"], "not a"),
    ]
    for argv, message in cases:
        code, _, err = cli(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("tillmesh: error: ") and message in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_import_with_the_wrong_replica_id_is_refused(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    usb = tmp_path / "s1.tmx"
    cli(capsys, "log", "export", built.db("s1/t1"), "--out", usb)
    code, _, err = cli(capsys, "log", "import", usb, built.db("hq"), "--replica", "s1/t9")
    assert code == 2 and "belongs to replica 'hq'" in err
