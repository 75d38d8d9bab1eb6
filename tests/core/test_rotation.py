"""HQ rotates a replica's key (`key.rotated`): the old key signs below the rotation's
seq, the new one from it on. Every replica ends with the same events and state whatever
order the rotation, the till's new events and a thief's old-key events arrive in: the
new key's events are held until the rotation comes, the old key's past it are refused
(or evicted, when they came first)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.state import StoreState
from core.errors import SignatureError, UnknownKey, WrongAuthor
from core.events import KeyRotated, event_hash
from core.keys import key_id
from core.log import EventLog
from core.signing import encode_public_key
from tests.core.rotation_kit import (
    AFTER,
    BEFORE,
    FROM,
    MALLORY,
    NEW,
    OLD,
    REGISTRY,
    ROTATE,
    STOLEN,
    T2,
    signed,
)
from tests.factories import chain


async def _log(path: Path) -> EventLog:
    return await EventLog.open(path, "s1/t1", StoreState(), verifier=REGISTRY)


async def _seen(log: EventLog) -> tuple[str, int, int]:
    def read(c):  # type: ignore[no-untyped-def]
        sales = c.execute("SELECT count(*) FROM st_sales WHERE origin = ?", (T2,)).fetchone()[0]
        return queries.state_digest(c), sales, log.version_vector().get(T2, 0)

    return await log.read(read)


def test_each_key_signs_its_own_seqs_only() -> None:
    rotated = REGISTRY.rotated(T2, FROM, NEW.public_key)
    for ev in BEFORE + AFTER:
        rotated.verify(ev, event_hash(ev))
    for ev in STOLEN:  # the old key past the rotation
        with pytest.raises(SignatureError, match="does not verify"):
            rotated.verify(ev, event_hash(ev))
    (early,) = signed(BEFORE[-1:], NEW)  # the new key below it
    with pytest.raises(SignatureError, match=f"key {key_id(NEW.public_key)}, which is not"):
        rotated.verify(early, event_hash(early))
    with pytest.raises(UnknownKey):  # before the rotation: a key it cannot know yet
        REGISTRY.verify(AFTER[0], event_hash(AFTER[0]))
    (made_up,) = signed(AFTER[:1], MALLORY)
    with pytest.raises(UnknownKey):
        rotated.verify(made_up, event_hash(made_up))
    assert rotated.keys_of(T2) == [(1, OLD.public_key), (FROM, NEW.public_key)]


async def test_new_key_events_wait_for_the_rotation_then_apply(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as log:
        result = await log.ingest(BEFORE + AFTER, peer="s1/t3")
        assert result.held == len(AFTER) and not result.rejected
        assert (await _seen(log))[1:] == (FROM - 1, FROM - 1)  # held: not state, not lost
    async with await _log(tmp_path / "a.db") as log:  # held rows outlive a restart
        heard: list[int] = []
        log.listeners.append(lambda evs: heard.extend(e.event.seq for e in evs))
        await log.ingest([ROTATE], peer="hq")
        assert (await _seen(log))[1:] == (10, 10)
        assert sorted(heard) == [1, *range(FROM, FROM + 5)]  # hq:1 and t2's released ones
        left = await log.read(lambda c: c.execute("SELECT count(*) FROM unverified").fetchone())
        assert left == (0,)


async def test_old_key_past_the_rotation_is_refused_once_known(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as log:
        await log.ingest([ROTATE, *BEFORE], peer="hq")
        result = await log.ingest(STOLEN, peer="s1/t3")
        assert result.accepted == [] and result.held == 0
        assert {type(e) for e in result.rejected} == {SignatureError}
        await log.ingest(AFTER, peer="s1/t2")
        assert (await _seen(log))[1:] == (10, 10)
    async with await _log(tmp_path / "a.db") as log:  # the rotation outlives a restart
        again = await log.ingest(STOLEN, peer="s1/t3")  # twins of 6..8, not signed by t2
        assert not again.accepted and {type(e) for e in again.rejected} == {SignatureError}
        assert (await _seen(log))[1:] == (10, 10)


async def test_old_key_events_taken_before_the_rotation_are_evicted(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as log:
        await log.ingest(BEFORE + STOLEN, peer="s1/t3")  # folded: nothing told it otherwise
        assert (await _seen(log))[1:] == (8, 8)
        await log.ingest(AFTER, peer="s1/t2")  # equivocations of the stolen ones, for now
        await log.ingest([ROTATE], peer="hq")
        await log.ingest(AFTER, peer="s1/t2")
        assert (await _seen(log))[1:] == (10, 10)
        evidence = await log.read(
            lambda c: c.execute(
                "SELECT seq FROM quarantine WHERE detail LIKE '%retired%' ORDER BY seq"
            ).fetchall()
        )
        assert [s for (s,) in evidence] == [6, 7, 8]


async def test_only_hq_rotates(tmp_path: Path) -> None:
    (forged,) = signed(chain(T2, [ROTATE_BODY]), OLD)
    async with await _log(tmp_path / "a.db") as log:
        result = await log.ingest([forged], peer=T2)
        assert isinstance(result.rejected[0], WrongAuthor)


ROTATE_BODY = KeyRotated(replica=T2, public_key=encode_public_key(MALLORY.public_key), from_seq=1)
PARTS = {"rotate": [ROTATE], "before": BEFORE, "after": AFTER, "stolen": STOLEN}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.permutations(list(PARTS)), st.booleans())
def test_one_state_whatever_the_order(tmp_path: Path, order: list[str], split: bool) -> None:
    async def run() -> tuple[str, int, int]:
        path = tmp_path / f"{'-'.join(order)}-{split}.db"
        path.unlink(missing_ok=True)
        async with await _log(path) as log:
            for part in order:
                events = PARTS[part]
                for piece in [events[:1], events[1:]] if split else [events]:
                    await log.ingest(piece, peer="x")
            await log.ingest(AFTER, peer="s1/t2")  # anti-entropy: the till's again
            await log.ingest([ROTATE, *BEFORE], peer="hq")
            await log.ingest(AFTER, peer="s1/t2")
            return await _seen(log)

    digest, sales, head = asyncio.run(run())
    assert (sales, head) == (10, 10)
    assert digest == EXPECTED[0]


async def _expected() -> tuple[str, int, int]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        async with await _log(Path(d) / "x.db") as log:
            await log.ingest([ROTATE, *BEFORE, *AFTER], peer="x")
            return await _seen(log)


EXPECTED = asyncio.run(_expected())
