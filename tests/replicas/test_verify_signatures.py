"""`tillmesh log verify` checks signatures offline: against the keys of the site the log
lies in, or of `--site` for a copy (a USB stick); a log with an event its origin did not
sign fails, naming origin, seqs and key."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest

from core.events import decode_event, encode_event
from core.log import EventLog
from replicas.cli.main import main
from replicas.site import init_site, load_signer
from tests.core.folds import CountingFold
from tests.factories import cash_sale


async def _till_log(root: Path, sales: int) -> Path:
    site = init_site(root, {"s1": ["t1"]})
    db = site.data_dir(root, "s1/t1") / "log.db"
    signer = load_signer(site.identity_dir(root, "s1/t1"))
    async with await EventLog.open(db, "s1/t1", CountingFold(), signer=signer) as log:
        for i in range(sales):
            await log.append(cash_sale(receipt=f"R{i}"))
    return db


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["log", "verify", *args])
    return code, capsys.readouterr().out


async def test_a_signed_log_verifies_here_and_as_a_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = await _till_log(tmp_path / "site", 5)
    code, out = _verify(capsys, str(db))
    assert code == 0 and "OK" in out and "signatures checked" in out
    usb = tmp_path / "usb" / "log.db"
    usb.parent.mkdir()
    shutil.copy(db, usb)
    code, out = _verify(capsys, str(usb))
    assert code == 0 and "signatures" in out and "not checked" in out  # no site: said so
    code, out = _verify(capsys, str(usb), "--site", str(tmp_path / "site"))
    assert code == 0 and "signatures checked" in out


async def test_an_event_its_origin_did_not_sign_fails_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = await _till_log(tmp_path / "site", 5)
    with sqlite3.connect(db) as conn:  # a forger rewrites the newest sale's signature
        (raw,) = conn.execute("SELECT raw FROM events WHERE seq = 5").fetchone()
        ev = decode_event(raw)
        forged = msgspec.structs.replace(ev, sig=bytes(64))
        conn.execute("UPDATE events SET raw = ? WHERE seq = 5", (encode_event(forged),))
    code, out = _verify(capsys, str(db))
    assert code == 1 and "FAILED" in out
    assert "signature" in out and "s1/t1:5" in out and "events 5" in out and "key" in out
