"""`tillmesh status` text: what an on-call engineer reads first."""

from __future__ import annotations

import pytest

from replicas.cli.run import _print_status


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
