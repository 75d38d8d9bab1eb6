"""Wire messages: round trips, hostile bytes -> FrameError only, frames bounded in size."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import OversizedError
from replicas.errors import FrameError
from replicas.sync.protocol import (
    MIN_FRAME_BYTES,
    EventsFrame,
    PullRequest,
    VersionVectorMsg,
    build_frames,
    build_reply,
    decode_message,
    encode_message,
    holds,
    scope_label,
)
from tests.replicas.simnet import make_chain

SETTINGS = settings(
    max_examples=150,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize(
    "msg",
    [
        VersionVectorMsg("s1/t1", {"s1/t1": 3, "hq": 0}, "s1"),
        PullRequest("hq", 7, [("s1/t1", 1, 500), ("s1/t2", 4, 4)], 501, MIN_FRAME_BYTES),
        EventsFrame("s1/t2", make_chain("s1/t2", 3), True, 9),
        EventsFrame("s1/t2", []),
    ],
)
def test_round_trip(msg: object) -> None:
    payload = encode_message(msg)  # type: ignore[arg-type]
    assert decode_message(payload, msg.sender) == msg  # type: ignore[attr-defined]


def _bad(payload: bytes, peer: str = "s1/t1", limit: int = MIN_FRAME_BYTES) -> str:
    with pytest.raises(FrameError) as info:
        decode_message(payload, peer, limit)
    assert info.value.peer == peer
    return info.value.detail


def test_hostile_shapes_are_frame_errors() -> None:
    enc = msgspec.msgpack.encode
    assert "undecodable" in _bad(b"\xc1")
    assert "undecodable" in _bad(b"")
    assert "undecodable" in _bad(enc(["zz", "s1/t1", {}, "s1"]))  # unknown tag
    assert "undecodable" in _bad(enc(["vv", "s1/t1", {"a": -1}, "s1"]))  # negative seq
    assert "undecodable" in _bad(enc(["pull", "s1/t1", 1, [["a", 0, 3]], 1, 1]))  # seq 0
    assert "undecodable" in _bad(b"\xa2\xfd\xfe")  # invalid UTF-8
    assert "empty range" in _bad(encode_message(PullRequest("s1/t1", 1, [("a", 5, 4)], 1, 1)))
    assert "oversized" in _bad(b"\0" * 2000, limit=1000)
    assert "claims" in _bad(encode_message(EventsFrame("s1/t2", [])))  # spoofed sender


@SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_escape_as_other_errors(data: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_message(data, "s1/t1")


@SETTINGS
@given(
    sizes=st.lists(st.integers(0, 70_000), max_size=40),
    limit=st.integers(MIN_FRAME_BYTES, 3 * MIN_FRAME_BYTES),
)
def test_build_frames_bounded_ordered_complete(sizes: list[int], limit: int) -> None:
    raws = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    frames = build_frames("s1/t1", raws, limit)
    assert all(len(f) <= limit for f in frames)
    decoded = [decode_message(f, "s1/t1", limit) for f in frames]
    assert [r for f in decoded for r in f.events] == raws  # type: ignore[union-attr]
    assert [f.more for f in decoded] == [True] * (len(frames) - 1) + [False] * bool(frames)


@SETTINGS
@given(sizes=st.lists(st.integers(0, 70_000), max_size=12), more=st.booleans())
def test_build_reply_is_one_bounded_prefix(sizes: list[int], more: bool) -> None:
    raws = [b"x" * n for n in sizes]
    payload, n = build_reply("hq", 5, raws, MIN_FRAME_BYTES, more)
    frame = decode_message(payload, "hq", MIN_FRAME_BYTES)
    assert isinstance(frame, EventsFrame) and frame.pull == 5
    assert len(payload) <= MIN_FRAME_BYTES and frame.events == raws[:n]
    assert frame.more == (more or n < len(raws))


def test_an_event_larger_than_a_frame_is_refused_not_split() -> None:
    with pytest.raises(OversizedError):
        build_frames("s1/t1", [b"x" * MIN_FRAME_BYTES], MIN_FRAME_BYTES)


def test_scope_comes_from_the_replica_id() -> None:
    till, hq = holds("s1/t1"), holds("hq")
    assert till("s1/t2") and till("hq") and till("s1/t1")
    assert not till("s2/t1") and not till("s1") and not till("s10/t1")
    assert hq("s2/t1") and hq("s1/t1")
    assert scope_label("hq") == "*" and scope_label("s1/t1") == "s1"
