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
    hq_pulls_to_store,
    inbox_prefix,
    is_inbox_of,
    parse_replica_id,
    pull_parties,
    pull_subject,
    pulls_from,
    pulls_to,
    replica_token,
    store_events_wildcard,
    store_of,
    store_pulls_to_hq,
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
    assert pull_subject("hq", "s1/t2") == "tm.pull.hq.s1.t2"
    assert pull_subject("s1/t2", "hq") == "tm.pull.s1.t2.hq"
    assert pull_subject("s1/t2", "s1/t3") == "tm.pull.s1.t2.s1.t3"
    assert pulls_to("s1/t2") == "tm.pull.s1.t2.>"
    assert pulls_to("hq") == "tm.pull.hq.>"
    assert pulls_from("s1/t2") == ["tm.pull.s1.*.s1.t2", "tm.pull.hq.s1.t2"]
    assert pulls_from("hq") == ["tm.pull.*.*.hq"]
    assert store_pulls_to_hq("s1") == "tm.pull.hq.s1.*"
    assert hq_pulls_to_store("s1") == "tm.pull.s1.*.hq"
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
        "s1/hq",  # tm.pull.*.*.hq would match its pulls and HQ's
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


REPLICA = st.one_of(st.just("hq"), st.tuples(NAME, NAME).map("/".join))


@given(REPLICA, REPLICA)
def test_pull_parties_reads_back_what_pull_subject_wrote(target: str, requester: str) -> None:
    assert pull_parties(pull_subject(target, requester)) == (target, requester)


def _matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    pat, sub = pattern.split("."), subject.split(".")
    if pat[-1] == ">":
        return len(sub) > len(pat) - 1 and _matches(
            ".".join(pat[:-1]), ".".join(sub[: len(pat) - 1])
        )
    return len(pat) == len(sub) and all(p in ("*", s) for p, s in zip(pat, sub, strict=True))


@given(REPLICA, REPLICA)
def test_the_wildcards_fence_exactly_the_named_parties(target: str, requester: str) -> None:
    subject = pull_subject(target, requester)
    assert _matches(pulls_to(target), subject)
    # Only the requester itself may publish it; only the target receives it.
    sent = [r for r in ("hq", "s1/t1", "s1/t2", "s2/t1", requester) if r != target]
    for other in sent:
        may_send = any(_matches(p, subject) for p in pulls_from(other))
        assert may_send == (other == requester and _reachable(target, requester)), other
    for other in ("hq", "s1/t1", "s2/t1"):
        if other != target:
            assert not _matches(pulls_to(other), subject)


def _reachable(target: str, requester: str) -> bool:
    """Whom a replica pulls from: a till its store's tills and HQ; HQ every till."""
    if requester == "hq":
        return target != "hq"
    return target == "hq" or store_of(target) == store_of(requester)


@pytest.mark.parametrize(
    "subject",
    [
        "tm.pull",
        "tm.pull.",
        "tm.pull.hq",  # no requester
        "tm.pull.s1.t1",  # the old scheme: a target alone
        "tm.pull.hq.s1",  # half a requester
        "tm.pull.hq.s1.t1.x",  # a token too many
        "tm.pull.s1.t1.hq.hq",
        "tm.pull.hq.hq.t1",  # a store may not be named hq
        "tm.pull.hq.s1.t*",
        "tm.pull.hq.s1.>",
        "tm.pull.hq..t1",
        "tm.pull.hq.s1.t1.",
        "tm.ev.hq.s1.t1",  # not a pull
        "tm.pullx.hq.s1.t1",
        "",
    ],
)
def test_malformed_pull_subjects_name_no_parties(subject: str) -> None:
    assert pull_parties(subject) is None


@pytest.mark.parametrize(
    ("replica", "reply", "own"),
    [
        ("s1/t1", "_INBOX.s1.t1.nuid.1", True),
        ("s1/t1", "_INBOX.s1.t1.nuid", True),
        ("hq", "_INBOX.hq.nuid.7", True),
        ("s1/t1", "_INBOX.s2.t1.x", False),  # another store's till: the attack
        ("s1/t1", "_INBOX.s1.t10.x", False),  # a prefix of the name is not the name
        ("s1/t1", "_INBOX.s1.t1", False),  # the bare prefix is no inbox
        ("s1/t1", "_INBOX.s1.t1.", False),
        ("s1/t1", "_INBOX.s1.t1.>", False),
        ("s1/t1", "_INBOX.s1.t1.*.x", False),
        ("s1/t1", "_INBOX.s1.t1..x", False),
        ("s1/t1", "", False),  # a publish, not a request
        ("hq", "_INBOX.s1.t1.x", False),
    ],
)
def test_is_inbox_of(replica: str, reply: str, own: bool) -> None:
    assert is_inbox_of(replica, reply) is own
