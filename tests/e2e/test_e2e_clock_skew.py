"""A till whose clock runs ahead, as a real process under Debian's `faketime`: the store
still converges to one digest, on every till and at HQ (issue 12: with a till a day
ahead, the receivers used to fold its events as 'skewed' by their own clocks and the
till itself did not, leaving two digests for good).

The nats-server children are Go binaries and keep the real time; only the till's own
clock (its HLC, its wall clock) is skewed, as on a till with a wrong system clock.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.e2e.harness import running_mesh


@pytest.mark.parametrize("ahead", ["+1d", "+30s"])
async def test_a_till_whose_clock_runs_ahead_converges_with_its_store(
    tmp_path: Path, ahead: str
) -> None:
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.skip("no faketime: `make system-deps` installs it (make test does)")
    wrap = {"s1/t2": [faketime, "-f", ahead]}
    async with running_mesh(tmp_path, {"s1": ["t1", "t2", "t3"]}, wrap=wrap) as mesh:
        await mesh.sell_everywhere(mesh.tills, rounds=4, per_round=2)
        statuses = await mesh.wait_converged()
        await mesh.check_on_disk(statuses)
        seen_at_hq = statuses["hq"]["clock_ahead"]
        if ahead == "+1d":  # beyond max_clock_offset_ms (60 s): noticed, and only that
            assert set(seen_at_hq) == {"s1/t2"}
            assert seen_at_hq["s1/t2"]["ahead_ms"] > 23 * 3600 * 1000
            assert statuses["s1/t2"]["clock_ahead"] == {}
        else:  # within the offset clocks accept: nothing to notice
            assert seen_at_hq == {}
