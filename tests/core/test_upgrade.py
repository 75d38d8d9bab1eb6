"""A log written before its site had signing keys (issue 14, item 6): its origin vouches
for its unsigned history with one signed `log.signed` checkpoint, written on its first
start with a key. Every event and the digest stay; the chain makes that one signature
cover every event below it, on every replica that holds them; other replicas take an
origin's unsigned events, as before signing, only until its checkpoint is known."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec

from conflict import queries
from conflict.state import StoreState
from core.errors import SignatureError
from core.events import LogSigned, event_hash
from core.keys import KeyRegistry
from core.log import EventLog
from core.signing import vouch
from core.verify import verify_log
from tests.core.upgrade_kit import (
    AFTER,
    CHECKPOINT,
    FORGED,
    KEY,
    STRICT,
    T2,
    UNSIGNED,
    UPGRADING,
    next_event,
)
from tests.factories import cash_sale


async def _state(log: EventLog) -> tuple[object, int]:
    """The state (stock, catalog, sales, shifts) and how many of t2's events are kept. The
    digest also hashes which seqs were folded (st_seen), so it moves by the checkpoint's:
    `same events => same digest` is checked against a peer holding the same events."""

    def read(c: sqlite3.Connection) -> tuple[object, int]:
        events = c.execute("SELECT count(*) FROM events WHERE origin = ?", (T2,)).fetchone()[0]
        state = queries.state_snapshot(c)
        del state["digest"]
        return state, events

    return await log.read(read)


def _verify(path: Path, registry: KeyRegistry) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [f"{f.kind} {f.origin}:{f.seq}" for f in verify_log(conn, verifier=registry).defects]


async def test_an_unsigned_log_keeps_every_event_and_its_digest(tmp_path: Path) -> None:
    path = tmp_path / "t2.db"
    async with await EventLog.open(path, T2, StoreState()) as log:  # a site without keys
        for ev in UNSIGNED:
            body = msgspec.msgpack.decode(ev.body, type=type(cash_sale()))
            await log.append(body)
        state, _ = await _state(log)
        hashes = await log.read(lambda c: c.execute("SELECT hash FROM events").fetchall())
    assert _verify(path, STRICT) == [f"signature {T2}:1"]  # nothing signed yet
    async with await EventLog.open(path, T2, StoreState(), signer=KEY) as log:
        checkpoint = await log.sign_history()
        assert checkpoint is not None and checkpoint.seq == 9 and checkpoint.sig
        assert await log.sign_history() is None  # once
        assert await _state(log) == (state, 9)  # not state; every event kept
        assert (
            await log.read(lambda c: c.execute("SELECT hash FROM events LIMIT 8").fetchall())
            == hashes
        )
    async with await EventLog.open(path, T2, StoreState(), signer=KEY) as log:
        assert await log.sign_history() is None  # it outlives a restart
        digest = await log.read(queries.state_digest)
        raws = await log.read(lambda c: c.execute("SELECT raw FROM events").fetchall())
    assert _verify(path, UPGRADING) == _verify(path, STRICT) == []  # the chain covers 1..8
    async with await EventLog.open(tmp_path / "peer.db", "s1/t1", StoreState(),
                                   verifier=STRICT) as peer:  # fmt: skip
        await peer.ingest_raw([raw for (raw,) in raws], peer=T2)
        assert await peer.read(queries.state_digest) == digest


async def test_unsigned_history_is_taken_until_the_checkpoint(tmp_path: Path) -> None:
    async with await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState(),
                                   verifier=UPGRADING) as log:  # fmt: skip
        first = await log.ingest(UNSIGNED[:4], peer=T2)  # t2 not upgraded yet: as before
        assert len(first.accepted) == 4 and not first.rejected
        unsigned_checkpoint = msgspec.structs.replace(CHECKPOINT, sig=b"")
        fake = await log.ingest([*UNSIGNED[4:], unsigned_checkpoint], peer="s1/t3")
        assert isinstance(fake.rejected[0], SignatureError)  # a checkpoint is always signed
        await log.ingest([CHECKPOINT, *AFTER], peer=T2)
        refused = await log.ingest([FORGED], peer="s1/t3")
        assert not refused.accepted and isinstance(refused.rejected[0], SignatureError)
        assert log.version_vector()[T2] == 11
    async with await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState(),
                                   verifier=UPGRADING) as log:  # fmt: skip
        again = await log.ingest([FORGED], peer="s1/t3")  # the checkpoint outlives a restart
        assert not again.accepted and isinstance(again.rejected[0], SignatureError)


async def test_a_strict_site_takes_the_history_only_with_its_checkpoint(tmp_path: Path) -> None:
    async with await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState(),
                                   verifier=STRICT) as log:  # fmt: skip
        alone = await log.ingest(UNSIGNED, peer="hq")
        assert not alone.accepted and alone.rejected
        whole = await log.ingest([*UNSIGNED, CHECKPOINT], peer="hq")  # one run: covered
        assert len(whole.accepted) == 9 and not whole.rejected


async def test_unsigned_events_held_past_the_checkpoint_are_checked_again(
    tmp_path: Path,
) -> None:
    async with await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState(),
                                   verifier=UPGRADING) as log:  # fmt: skip
        held = await log.ingest([FORGED], peer="s1/t3")  # on trust, but ahead: held
        assert held.held == 1
        await log.ingest([*UNSIGNED, CHECKPOINT, *AFTER], peer=T2)
        assert log.version_vector()[T2] == 11  # the forged 12 did not drain in
        rows = await log.read(
            lambda c: c.execute(
                "SELECT seq, kind FROM quarantine WHERE origin = ?", (T2,)
            ).fetchall()
        )
        assert rows == [(12, "SignatureError")]
        genuine = next_event(AFTER[-1], cash_sale(receipt="R11", price=302))
        assert len((await log.ingest([genuine], peer=T2)).accepted) == 1


async def test_an_unsigned_event_held_above_a_held_checkpoint_is_checked_as_they_drain(
    tmp_path: Path,
) -> None:
    """The checkpoint and the forgery above it both wait for the gap below: when it
    fills, the drain stops at the checkpoint and what it held above is checked again
    (before, the forgery drained in with it, taken on the trust the checkpoint ends)."""
    async with await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState(),
                                   verifier=UPGRADING) as log:  # fmt: skip
        assert (await log.ingest([FORGED], peer="s1/t3")).held == 1
        assert (await log.ingest([CHECKPOINT, *AFTER], peer=T2)).held == 3
        filled = await log.ingest(UNSIGNED, peer=T2)
        assert len(filled.accepted) == 9  # 1-8 and the checkpoint; 10-11 released after it
        assert log.version_vector()[T2] == 11
        rows = await log.read(
            lambda c: c.execute(
                "SELECT seq, kind FROM quarantine WHERE origin = ?", (T2,)
            ).fetchall()
        )
        assert rows == [(12, "SignatureError")]


def test_an_unsigned_checkpoint_is_refused_even_under_an_unsigned_event_that_chains_to_it() -> None:
    """A `log.signed` must carry a signature of its own (core.keys SIGNED_ONLY_TYPES). An
    unsigned sale chaining to it is taken on the history's trust, but that trust does not
    reach down to a checkpoint: else a relay could end a till's unsigned history with a
    checkpoint the till never signed, by sending it under one unsigned event."""
    fake = next_event(UNSIGNED[-1], LogSigned(unsigned=8), signed=False)
    above = next_event(fake, cash_sale(receipt="R9", price=300), signed=False)
    found = vouch([(ev, event_hash(ev)) for ev in (fake, above)], UPGRADING)
    assert 1 not in found.refused  # the sale: unsigned history, on trust
    assert isinstance(found.refused.get(0), SignatureError)  # the checkpoint: refused
