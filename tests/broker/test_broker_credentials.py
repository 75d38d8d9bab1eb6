"""Credentials files and the permission sets bound to each replica."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from broker.credentials import (
    Credentials,
    generate_store_credentials,
    leaf_key,
    leaf_permissions,
    load_credentials,
    permissions_for,
    route_key,
    save_credentials,
)
from broker.errors import CredentialsError, InvalidReplicaId


def test_generate_store_credentials_keys_and_uniqueness() -> None:
    creds = generate_store_credentials("s1", ["t1", "t2"], hq=True)
    assert set(creds) == {
        "s1/t1",
        "s1/t2",
        "hq",
        leaf_key("s1"),
        route_key("s1"),
        route_key("hq"),
    }
    assert len({c.password for c in creds.values()}) == len(creds)
    assert len({c.user for c in creds.values()}) == len(creds)
    assert all(len(c.password) >= 32 for c in creds.values())  # token_urlsafe(24)
    assert "hq" not in generate_store_credentials("s1", ["t1"], hq=False)


def test_generate_rejects_bad_names() -> None:
    with pytest.raises(InvalidReplicaId):
        generate_store_credentials("s1", ["t.1"])


def test_repr_hides_password() -> None:
    assert "secret" not in repr(Credentials("u", "secret"))


def test_save_is_0600_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "creds.json"
    path.write_text("{}")
    path.chmod(0o644)  # a pre-existing, too-open file must be tightened
    creds = generate_store_credentials("s1", ["t1"])
    save_credentials(path, creds)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credentials(path) == creds


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", '{"a": 1}', '{"a": {"user": "u"}}', '{"a": {"user": "", "password": "p"}}'],
)
def test_load_rejects_malformed(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(CredentialsError) as info:
        load_credentials(path)
    assert info.value.path == path


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError):
        load_credentials(tmp_path / "absent.json")


def test_till_permissions() -> None:
    p = permissions_for("s1/t1", "s1")
    assert p["publish"]["allow"] == [
        "tm.ev.s1.t1",
        "tm.vv.s1.t1",
        "tm.pull.s1.*.s1.t1",  # pulls from its store's tills, as itself
        "tm.pull.hq.s1.t1",  # pulls from HQ, as itself
    ]
    assert set(p["subscribe"]["allow"]) == {
        "tm.ev.s1.>",
        "tm.ev.hq",
        "tm.vv.s1.>",
        "tm.vv.hq",
        "tm.pull.s1.t1.>",  # pulls addressed to it, by anyone
        "_INBOX.s1.t1.>",
    }
    assert p["allow_responses"] is True
    json.dumps(p)  # plain data, renderable


def test_hq_permissions() -> None:
    p = permissions_for("hq")
    assert p["publish"]["allow"] == ["tm.ev.hq", "tm.vv.hq", "tm.pull.*.*.hq"]
    assert p["subscribe"]["allow"] == ["tm.ev.>", "tm.vv.>", "tm.pull.hq.>", "_INBOX.hq.>"]


def test_store_mismatch_is_refused() -> None:
    with pytest.raises(InvalidReplicaId):
        permissions_for("s1/t1", "s2")


def test_leaf_permissions_are_scoped_to_the_store() -> None:
    p = leaf_permissions("s1")
    assert not any("s2" in s for s in p["publish"]["allow"] + p["subscribe"]["allow"])
    assert "tm.ev.s1.>" in p["publish"]["allow"]
    assert "_INBOX.hq.>" in p["publish"]["allow"]  # replies to HQ pulls cross the leaf
    assert "tm.ev.s1.>" not in p["subscribe"]["allow"]
    # Pulls cross the leaf between HQ and s1's tills only, each naming its requester.
    assert [s for s in p["publish"]["allow"] if s.startswith("tm.pull.")] == ["tm.pull.hq.s1.*"]
    assert [s for s in p["subscribe"]["allow"] if s.startswith("tm.pull.")] == ["tm.pull.s1.*.hq"]
