"""The subject scheme: derivations and validation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import BrokerError, InvalidReplicaId
from broker.subjects import (
    ALL_EVENTS,
    ALL_VV,
    events_subject,
    inbox_prefix,
    parse_replica_id,
    pull_subject,
    replica_token,
    store_events_wildcard,
    store_of,
    store_vv_wildcard,
    vv_subject,
)

NAME = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True).filter(lambda s: s != "hq")


def test_examples() -> None:
    assert replica_token("s1/t2") == "s1.t2"
    assert replica_token("hq") == "hq"
    assert events_subject("s1/t2") == "tm.ev.s1.t2"
    assert events_subject("hq") == "tm.ev.hq"
    assert vv_subject("s1/t2") == "tm.vv.s1.t2"
    assert vv_subject("hq") == "tm.vv.hq"
    assert pull_subject("s1/t2") == "tm.pull.s1.t2"
    assert pull_subject("hq") == "tm.pull.hq"
    assert inbox_prefix("s1/t2") == "_INBOX.s1.t2"
    assert inbox_prefix("hq") == "_INBOX.hq"
    assert store_events_wildcard("s1") == "tm.ev.s1.>"
    assert store_vv_wildcard("s1") == "tm.vv.s1.>"
    assert (ALL_EVENTS, ALL_VV) == ("tm.ev.>", "tm.vv.>")
    assert store_of("s1/t2") == "s1" and store_of("hq") is None


@given(NAME, NAME)
def test_valid_ids_map_to_two_plain_tokens(store: str, till: str) -> None:
    rid = f"{store}/{till}"
    parsed = parse_replica_id(rid)
    assert (parsed.store, parsed.till) == (store, till)
    assert events_subject(rid).split(".") == ["tm", "ev", store, till]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "s1",
        "s1/",
        "/t1",
        "s1/t1/x",
        "s 1/t1",
        "s1/t.1",
        "s1/t*",
        "s1/>",
        "a" * 33 + "/t",
        "hq/t1",
        "HQ/",
        "s1/t1\n",
        "é/t1",
    ],
)
def test_invalid_ids_raise_typed_error(bad: str) -> None:
    with pytest.raises(InvalidReplicaId) as info:
        events_subject(bad)
    assert isinstance(info.value, BrokerError) and info.value.value == bad


@given(st.text(max_size=40))
def test_arbitrary_text_is_either_valid_or_rejected(text: str) -> None:
    try:
        subject = events_subject(text)
    except InvalidReplicaId:
        return
    # Anything accepted yields a subject with no wildcards or whitespace.
    assert not any(c in subject for c in "*> \t\r\n")


@pytest.mark.parametrize("bad", ["", "s.1", "*", "hq", "x" * 33])
def test_store_wildcards_validate(bad: str) -> None:
    with pytest.raises(InvalidReplicaId):
        store_events_wildcard(bad)
