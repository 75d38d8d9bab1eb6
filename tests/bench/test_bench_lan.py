"""A store over emulated machines (replicas/demo/netlab/: each till in a network namespace of its
own, its own address, a real cable to cut) beside the same store over loopback, measured in
the same run by the same code (tests/bench/measure.py): in-store propagation, and the
catch-up of a till that was away while events were appended elsewhere. Figures only.

Both runs are the same site of `tillmesh` processes (HQ, tills t1 and t2 of store s1). Away
is, on the emulated LAN, t1's cable cut (`host.cut()`, then `host.restore()`); over loopback
a till has no cable, so it is frozen instead (SIGSTOP of it and its nats-server, SIGCONT).
Without network namespaces (not root, no `ip`), the loopback figures are printed and the
test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from replicas.demo.netlab.network import Network, netns_unavailable
from replicas.demo.netlab.runs import remove_stale
from tests.bench.conftest import percentile, table
from tests.bench.measure import CatchUpAfter, catch_up_after, propagation
from tests.e2e.harness import Mesh, running_mesh
from tests.e2e.lan import lan_site

pytestmark = pytest.mark.bench
STORE = {"s1": ["t1", "t2"]}
SALES = 400  # propagated t1 -> t2, one at a time
EVENTS = 50_000  # appended on t2 while t1 is away

Step = Callable[[], Awaitable[None]]


@dataclass
class Figures:
    latencies: list[float]  # s, per sale, t1's log -> t2's log
    back: CatchUpAfter


async def figures(mesh: Mesh, away: Step, back: Step) -> Figures:
    """Once every replica holds a sale of each till (all linked): propagation, catch-up."""
    await mesh.sell_everywhere(mesh.tills, rounds=1, per_round=1)
    await mesh.wait_converged(90)
    latencies = await propagation(mesh, "s1/t1", "s1/t2", SALES)
    return Figures(latencies, await catch_up_after(mesh, "s1/t1", "s1/t2", EVENTS, away, back))


async def over_loopback(tmp: Path) -> Figures:
    async with running_mesh(tmp, STORE) as mesh:
        t1 = mesh["s1/t1"]
        return await figures(mesh, lambda: t1.freeze(tree=True), lambda: t1.thaw(tree=True))


async def over_emulated_lan(tmp: Path) -> Figures:
    remove_stale()  # what killed runs left (the `netns` fixtures do the same)
    async with Network() as net:
        site = lan_site(net, tmp, STORE)
        t1 = site.host("s1/t1")
        async with site.mesh() as mesh:
            return await figures(
                mesh, lambda: asyncio.to_thread(t1.cut), lambda: asyncio.to_thread(t1.restore)
            )


Row = tuple[str, str, str]


def rows(loopback: Figures, lan: Figures | None) -> list[Row]:
    """One row per figure: over loopback, then over the emulated LAN and its ratio."""

    def row(name: str, of: Callable[[Figures], float], unit: str, fmt: str) -> Row:
        ours = of(loopback)
        there = f"{of(lan):{fmt}} {unit} ({of(lan) / ours:.2f}x)" if lan else "-"
        return (name, f"{ours:{fmt}} {unit}", there)

    def lat(q: float) -> Callable[[Figures], float]:
        return lambda f: percentile(f.latencies, q) * 1e3

    n = f"{loopback.back.events:,}"
    return [
        ("", "loopback", "emulated LAN (x loopback)" if lan else "emulated LAN: skipped"),
        row(f"propagation p50 ({SALES} sales)", lat(50), "ms", ".2f"),
        row("propagation p99", lat(99), "ms", ".2f"),
        row(f"catch-up of {n} events", lambda f: f.back.rate, "ev/s", ",.0f"),
        row("  first step after return", lambda f: f.back.resumed, "s", ".2f"),
    ]


async def test_bench_store_over_emulated_lan(tmp_path: Path) -> None:
    loopback = await over_loopback(tmp_path / "loopback")
    why_not = netns_unavailable() or ""
    lan = None if why_not else await over_emulated_lan(tmp_path / "lan")
    table(
        "in-store replication, tillmesh till processes: loopback vs emulated LAN (one run)",
        rows(loopback, lan),
    )
    if why_not:  # `make bench` shows no skip reasons (no -rs): print it
        print(f"  emulated LAN skipped: network namespaces unavailable: {why_not}")
        pytest.skip(f"emulated LAN: network namespaces unavailable: {why_not}")
