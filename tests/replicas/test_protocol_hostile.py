"""A hostile till among honest replicas: convergence goes on, and status shows it.

The hostile replica (`s1/evil`) is a member of store s1, so the broker lets it
publish on its own subjects and answer pulls; it sends garbage, oversized frames,
a vector it cannot serve, another store's events, or replays of old frames.
"""

from __future__ import annotations

import pytest

from replicas.sync.config import HOSTILE_KINDS
from tests.replicas.simnet import FAST, Faults, Hostile, Node, Sim

HONEST = ["s1/t1", "s1/t2", "s1/t3", "hq"]
EVIL = "s1/evil"

EXPECTED_KINDS = {
    "garbage": {"bad_frame"},
    "oversize": {"bad_frame"},
    "liar": {"short"},
    "foreign": {"rejected"},
    "replay": {"bad_frame", "duplicate_frame"},
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", sorted(EXPECTED_KINDS))
def test_honest_replicas_converge_and_report_the_hostile_peer(mode: str, seed: int) -> None:
    nodes = [Node(rid, FAST) for rid in HONEST] + [Hostile(EVIL, FAST, mode, seed)]
    sim = Sim(nodes, seed, Faults(drop=0.1, dup=0.1, max_delay=0.3))
    for step in range(200):
        if step % 2 == 0:
            sim.append(sim.rng.choice(HONEST), sim.rng.randint(1, 20))
        sim.step()
    sim.run_until_converged(1000, HONEST)
    for rid in HONEST:
        incidents = sim.nodes[rid].engine.status(sim.now).incidents
        kinds = {i.kind for i in incidents if i.peer == EVIL}
        assert EXPECTED_KINDS[mode] <= kinds, (rid, kinds)
        honest_blamed = [i for i in incidents if i.peer != EVIL and i.kind in HOSTILE_KINDS]
        assert not honest_blamed, (rid, honest_blamed)
        assert EVIL not in sim.nodes[rid].log.vv()


def test_a_liar_is_backed_off_not_retried_constantly() -> None:
    nodes = [Node(rid, FAST) for rid in HONEST] + [Hostile(EVIL, FAST, "liar")]
    sim = Sim(nodes, seed=3)
    for _ in range(400):  # 20 s; backoffs of 2, 4, 8, 8... s allow about 4 pulls per victim
        sim.step()
    for rid in HONEST:
        status = sim.nodes[rid].engine.status(sim.now)
        (short,) = [i for i in status.incidents if i.kind == "short"]
        assert 2 <= short.count <= 5
        assert status.inflight == [] or status.inflight[0].peer == EVIL


def test_hq_does_not_take_another_stores_events_from_a_till() -> None:
    nodes = [Node("hq", FAST), Node("s2/x1", FAST), Hostile(EVIL, FAST, "foreign")]
    sim = Sim(nodes, seed=1)
    for _ in range(100):
        sim.step()
    assert "s2/zz" not in sim.nodes["hq"].log.vv()
    assert "s2/zz" not in sim.nodes["s2/x1"].log.vv()
    kinds = {i.kind for i in sim.nodes["hq"].engine.status(sim.now).incidents}
    assert "rejected" in kinds
