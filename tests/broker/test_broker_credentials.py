"""Credentials files (password mode)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from broker.credentials import (
    Credentials,
    generate_store_credentials,
    leaf_key,
    load_credentials,
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
