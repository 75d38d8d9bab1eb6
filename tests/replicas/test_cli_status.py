"""`tillmesh status` text: what an on-call engineer reads first."""

from __future__ import annotations

import httpx
import pytest

from replicas.cli.main import main
from replicas.cli.run import TOKEN_ENV, _print_status


def test_status_shows_held_and_quarantined_events(capsys: pytest.CaptureFixture[str]) -> None:
    """Held and refused events were in /status but not in the text status."""
    _print_status({
        "replica_id": "s1/t1", "online": False, "unsynced_to_hq": 3, "open_conflicts": 0,
        "events": 120, "pending": 4, "quarantined": 2, "version_vector": {"s1/t1": 120},
        "sync": {},
    })  # fmt: skip
    out = capsys.readouterr().out
    assert "events    120   held: 4   quarantined: 2" in out
    assert "not yet at HQ: 3" in out


def test_hq_status_lists_every_till_with_its_backlog(capsys: pytest.CaptureFixture[str]) -> None:
    """HQ showed 'not yet at HQ: 0' (meaningless there) and no backlog per till."""
    _print_status({
        "replica_id": "hq", "online": True, "unsynced_to_hq": 0, "open_conflicts": 0,
        "events": 50, "pending": 0, "quarantined": 0, "version_vector": {},
        "sync": {"receipts": {"s1/t1": 2}, "origins": {
            "s1/t1": {"held": 30, "behind": 0, "missing_for": None, "last_seen": 0.4},
            "s2/t1": {"held": 12, "behind": 7, "missing_for": 95.0, "last_seen": 31.2},
            "hq": {"held": 2, "behind": 0, "missing_for": None, "last_seen": None},
        }},
    })  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert "not yet at HQ" not in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[3:6]}
    assert list(rows) == ["hq", "s1/t1", "s2/t1"]
    assert rows["s2/t1"] == ["s2/t1", "12", "7", "95", "s", "31.2", "s", "ago", "-"]
    assert rows["s1/t1"][-1] == "2"


def _answering(monkeypatch: pytest.MonkeyPatch, code: int, seen: list[dict[str, str]]) -> None:
    def get(url: str, headers: dict[str, str], timeout: float, verify: object) -> httpx.Response:
        seen.append(headers)
        return httpx.Response(code, json={"replica_id": "s1/t1"}, request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", get)


def test_status_sends_the_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A till on the network has tokens: `status` got 401 and said 'no replica answering'."""
    seen: list[dict[str, str]] = []
    _answering(monkeypatch, 200, seen)
    monkeypatch.setenv(TOKEN_ENV, "tm_env")
    assert main(["status", "--url", "http://10.0.1.11:8080", "--json"]) == 0
    assert main(["status", "--url", "http://10.0.1.11:8080", "--token", "tm_arg"]) == 0
    assert seen == [{"Authorization": "Bearer tm_env"}, {"Authorization": "Bearer tm_arg"}]


def test_status_refused_for_want_of_a_token_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _answering(monkeypatch, 401, [])
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert main(["status", "--url", "http://10.0.1.11:8080"]) != 0
    err = capsys.readouterr().err
    assert "needs a token" in err and TOKEN_ENV in err and "no replica answering" not in err
