"""Issue 3, scenario 2: partitions made with real signals (tests/e2e/faults.py), sales
continuing on every side that can sell, then heal and full convergence against the
acknowledged sales. Each fault first checks that the partition is real (e.g. nobody saw
t1's new sales). The soak variants hold each partition far longer and repeat it.
"""

from __future__ import annotations

import pytest

from tests.e2e.faults import FAULTS, sell_through
from tests.e2e.harness import Mesh


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_partition_heals_to_the_acknowledged_sales(mesh: Mesh, fault: str) -> None:
    await sell_through(mesh, FAULTS[fault], hold=1.0, min_rounds=3)


@pytest.mark.soak
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_soak_long_partitions_repeated(mesh: Mesh, fault: str) -> None:
    for _ in range(3):
        await sell_through(mesh, FAULTS[fault], hold=30.0, min_rounds=10)
