"""Signed events: an event is accepted only with its origin's signature over its hash;
one signature covers the run of hashes below it; a log refuses (quarantines) what no
valid signature covers and applies nothing of it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import SignatureError, UnknownOrigin, WrongAuthor
from core.events import Event, ProductUpserted, decode_event, event_hash
from core.log import EventLog
from core.signing import Ed25519Signer, KeyRegistry, new_signing_seed, vouch
from replicas.sync.protocol import EventsFrame, build_reply, decode_message, ends_signed
from tests.conflict.factory import scenarios
from tests.core.folds import CountingFold
from tests.factories import cash_sale, chain

ORIGINS = ("hq", "s1/t1", "s1/t2", "s2/t1")
SIGNERS = {origin: Ed25519Signer(new_signing_seed()) for origin in (*ORIGINS, "mallory")}
REGISTRY = KeyRegistry({o: SIGNERS[o].public_key for o in ORIGINS})


def signed(ev: Event, signer: Ed25519Signer | None = None) -> Event:
    key = signer or SIGNERS[ev.origin]
    return msgspec.structs.replace(ev, sig=key.sign(event_hash(ev)))


def _flip(value: bytes, at: int) -> bytes:
    if not value:
        return b"\x00"
    i = at % len(value)
    return value[:i] + bytes([value[i] ^ 0x01]) + value[i + 1 :]


def _tampered(ev: Event, field: str, at: int) -> Event:
    if field in ("body", "prev", "sig"):
        return msgspec.structs.replace(ev, **{field: _flip(getattr(ev, field), at)})
    if field in ("seq", "hlc", "schema"):
        return msgspec.structs.replace(ev, **{field: getattr(ev, field) ^ (1 << (at % 8))})
    other = ORIGINS[(ORIGINS.index(ev.origin) + 1 + at % 3) % len(ORIGINS)]  # never itself
    return msgspec.structs.replace(ev, **{field: other if field == "origin" else ev.type + "x"})


@settings(max_examples=200)
@given(
    scenarios(max_events=8),
    st.sampled_from(["body", "seq", "hlc", "schema", "origin", "type", "prev", "sig"]),
    st.integers(0, 10_000),
)
def test_any_change_to_a_signed_event_is_refused(batch, field: str, at: int) -> None:  # type: ignore[no-untyped-def]
    for acc in batch:  # every body type the scenario generator makes
        ev = signed(acc.event)
        REGISTRY.verify(ev, event_hash(ev))  # the genuine one passes
        bad = _tampered(ev, field, at)
        assert bad != ev
        with pytest.raises(SignatureError):
            REGISTRY.verify(bad, event_hash(bad))


def test_unsigned_foreign_and_unknown_are_refused_with_the_reason() -> None:
    (ev,) = chain("s1/t1", [cash_sale()])
    with pytest.raises(SignatureError, match="unsigned"):
        REGISTRY.verify(ev, event_hash(ev))
    forged = signed(ev, SIGNERS["mallory"])
    with pytest.raises(SignatureError, match="does not verify") as info:
        REGISTRY.verify(forged, event_hash(forged))
    assert info.value.key  # names the key it was checked against
    (ghost,) = chain("s1/ghost", [cash_sale()])
    with pytest.raises(UnknownOrigin):
        REGISTRY.verify(signed(ghost, SIGNERS["mallory"]), event_hash(ghost))


class CountingVerifier:
    def __init__(self) -> None:
        self.calls = 0

    def verify(self, ev: Event, digest: bytes) -> None:
        self.calls += 1
        REGISTRY.verify(ev, digest)


def test_one_signature_covers_the_run_below_it() -> None:
    run = [signed(ev) for ev in chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(50)])]
    counting = CountingVerifier()
    assert vouch([(ev, event_hash(ev)) for ev in reversed(run)], counting).refused == {}
    assert counting.calls == 1
    # Only the newest need be signed: the chain vouches for the rest.
    bare = [msgspec.structs.replace(ev, sig=b"") for ev in run[:-1]] + run[-1:]
    assert vouch([(ev, event_hash(ev)) for ev in bare], REGISTRY).refused == {}


def test_a_changed_event_inside_a_run_is_refused_and_the_rest_stand() -> None:
    run = [signed(ev) for ev in chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(5)])]
    run[2] = msgspec.structs.replace(run[2], body=_flip(run[2].body, 3))  # content changed
    refused = vouch([(ev, event_hash(ev)) for ev in run], REGISTRY).refused
    assert list(refused) == [2]  # 3 and 4 signed it off; 2 no longer is what 3 names


async def _log(tmp: Path, rid: str, *, verify: bool = True) -> EventLog:
    return await EventLog.open(
        tmp / f"{rid.replace('/', '-')}.db",
        rid,
        CountingFold(),
        signer=SIGNERS[rid],
        verifier=REGISTRY if verify else None,
    )


async def test_a_log_signs_its_events_and_its_peers_accept_only_signed_ones(
    tmp_path: Path,
) -> None:
    async with await _log(tmp_path, "s1/t1") as t1, await _log(tmp_path, "s1/t2") as t2:
        made = [await t1.append(cash_sale(receipt=f"R{i}")) for i in range(3)]
        assert all(len(ev.sig) == 64 for ev in made)
        result = await t2.ingest(made, peer="s1/t1")
        assert len(result.accepted) == 3 and not result.rejected

        # Mallory (holding t2's NATS credentials, say) writes in t1's name: next seq,
        # right chain link, her own key.
        (forged,) = chain("s1/t1", [cash_sale(price=1)], prev=event_hash(made[-1]), first_seq=4)
        ahead = chain("s1/t1", [cash_sale(price=2)], prev=bytes(32), first_seq=9)
        bad = [signed(forged, SIGNERS["mallory"]), signed(ahead[0], SIGNERS["mallory"])]
        result = await t2.ingest(bad, peer="s1/t2")
        assert result.accepted == [] and result.held == 0  # not applied, not even held
        assert {type(e) for e in result.rejected} == {SignatureError}
        assert t2.version_vector()["s1/t1"] == 3
        kinds = await t2.read(
            lambda c: c.execute("SELECT peer, kind FROM quarantine ORDER BY id").fetchall()
        )
        assert kinds == [("s1/t2", "SignatureError"), ("s1/t2", "SignatureError")]

        honest = await t1.append(cash_sale(receipt="R3"))  # the real seq 4 still gets in
        assert (await t2.ingest([honest], peer="s1/t1")).accepted == [honest]


async def test_out_of_range_fields_fail_alone_and_never_the_commit(tmp_path: Path) -> None:
    """hlc >= 2**63 once raised OverflowError inside the group commit: every honest sale
    of that commit failed with it."""
    async with await _log(tmp_path, "s1/t1", verify=False) as log:
        good = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(3)])
        huge_hlc = msgspec.structs.replace(good[1], hlc=2**63)
        (far,) = chain("s1/t3", [cash_sale()], first_seq=2**63)
        result = await log.ingest([good[0], huge_hlc, far, *good[1:]], peer="s1/t2")
        assert result.accepted == good and len(result.rejected) == 2
        sales = [log.append(cash_sale(receipt=f"H{i}")) for i in range(20)]
        assert len(await asyncio.gather(*sales)) == 20  # the log writes on


async def test_a_tills_product_is_refused_at_ingest_as_at_its_api(tmp_path: Path) -> None:
    """Signed by the till itself, so genuinely its: but products are HQ's to define."""
    async with await _log(tmp_path, "s1/t2") as log:
        product = ProductUpserted(sku="B2", name="Bread", price=300, active=False)
        (ev,) = chain("s1/t1", [product])
        result = await log.ingest([signed(ev)], peer="s1/t1")
        assert result.accepted == [] and isinstance(result.rejected[0], WrongAuthor)
        (ev,) = chain("hq", [product])
        assert (await log.ingest([signed(ev)], peer="hq")).accepted == [signed(ev)]


async def test_a_twin_is_equivocation_only_when_its_origin_signed_it(tmp_path: Path) -> None:
    async with await _log(tmp_path, "s1/t2") as log:
        events = [
            signed(ev) for ev in chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(3)])
        ]
        await log.ingest(events, peer="s1/t1")
        (twin,) = chain("s1/t1", [cash_sale(price=1)], prev=event_hash(events[0]), first_seq=2)
        await log.ingest([signed(twin, SIGNERS["mallory"])], peer="s1/t3")  # forged
        await log.ingest([signed(twin)], peer="s1/t3")  # t1's own key: proof it equivocated
        kinds = await log.read(
            lambda c: c.execute("SELECT origin, seq, kind FROM quarantine ORDER BY id").fetchall()
        )
        assert kinds == [("s1/t1", 2, "SignatureError"), ("s1/t1", 2, "Equivocation")]


async def test_a_refused_event_is_blamed_on_its_sender_not_on_who_fills_the_gap(
    tmp_path: Path,
) -> None:
    async with await _log(tmp_path, "s1/t2") as log:
        sale, product = chain("s1/t1", [cash_sale(), ProductUpserted(sku="X", name="x", price=1)])
        ahead = await log.ingest([signed(product)], peer="s1/t9")  # seq 2 before seq 1
        assert ahead.held == 0 and isinstance(ahead.rejected[0], WrongAuthor)
        filled = await log.ingest([signed(sale)], peer="hq")
        assert filled.accepted == [signed(sale)] and filled.rejected == []
        rows = await log.read(lambda c: c.execute("SELECT peer, kind FROM quarantine").fetchall())
        assert rows == [("s1/t9", "WrongAuthor")]


async def test_a_frame_of_refusals_stops_early_and_sales_go_on(tmp_path: Path) -> None:
    async with await _log(tmp_path, "s1/t2") as log:
        genuine = [
            signed(e) for e in chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(3)])
        ]
        await log.ingest(genuine, peer="s1/t1")
        twins = [
            signed(msgspec.structs.replace(genuine[1], hlc=genuine[1].hlc + k), SIGNERS["mallory"])
            for k in range(1, 500)
        ]
        result = await log.ingest(twins, peer="s1/t9")
        assert len(result.rejected) == 65 and "refused events in one frame" in str(
            result.rejected[-1]
        )
        assert len(await asyncio.gather(*(log.append(cash_sale()) for _ in range(5)))) == 5


async def test_what_the_chain_covers_is_stored_without_unchecked_signature_bytes(
    tmp_path: Path,
) -> None:
    """A peer planting bogus signature bytes on covered events must not make this log
    serve runs that end on them (every receiver would refuse them, blaming us)."""
    run = [signed(e) for e in chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(10)])]
    planted = [
        msgspec.structs.replace(e, sig=bytes(64)) if e.seq not in (5, 10) else e for e in run
    ]
    async with await _log(tmp_path, "s1/t2") as log:
        for part in (planted[:5], planted[5:]):  # two frames: 5 and 10 verified
            assert len((await log.ingest(part, peer="s1/t3")).accepted) == 5
        stored = await log.read_range("s1/t1", 1, 10)
    assert [len(decode_event(r).sig) for r in stored] == [0, 0, 0, 0, 64] * 2
    assert ends_signed(stored[:8]) == stored[:5]  # a run ends on what it can prove
    frame, _ = build_reply("s1/t2", 1, stored, sum(map(len, stored[:8])) + 40, False)
    sent = decode_message(frame, "s1/t2")
    assert isinstance(sent, EventsFrame) and sent.more and sent.events == stored[:5]
