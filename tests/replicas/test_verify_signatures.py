"""`tillmesh log verify` checks signatures offline: against the keys of the site the log
lies in, or of `--site` for a copy (a USB stick); a log with an event its origin did not
sign fails, naming origin, seqs and key."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import msgspec
import pytest

from core.events import decode_event, encode_event, event_hash
from core.log import EventLog
from core.signing import Ed25519Signer, new_signing_seed
from replicas.cli.main import main
from replicas.keyfiles import load_signer
from replicas.site import init_site
from tests.core.folds import CountingFold
from tests.factories import cash_sale, chain


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


async def test_restore_copies_only_what_its_origins_signed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "site"
    db = await _till_log(root, 5)
    peer_db = root / "s1" / "t1" / "peer.db"  # a peer's copy, holding a forged s1/t1:6
    async with await EventLog.open(db, "s1/t1", CountingFold()) as t1:
        genuine = await t1.read_range("s1/t1", 1, 10)
    mallory = Ed25519Signer(new_signing_seed())
    async with await EventLog.open(peer_db, "s1/t2", CountingFold()) as peer:
        await peer.ingest_raw(genuine, "s1/t1")
        last = decode_event(genuine[-1])
        (forged,) = chain("s1/t1", [cash_sale(price=1)], prev=event_hash(last), first_seq=6)
        forged = msgspec.structs.replace(forged, sig=mallory.sign(event_hash(forged)))
        assert (await peer.ingest([forged], "mallory")).accepted  # an unchecking build took it
    new = root / "s1" / "t1" / "restored.db"
    argv = ["log", "restore", str(new), "--from", str(peer_db), "--replica", "s1/t1"]
    code = await asyncio.to_thread(main, argv)  # the command runs its own event loop
    out = capsys.readouterr().out
    assert code == 1 and "next append is s1/t1:6" in out and "signature does not verify" in out
