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
