"""Faults made with real signals, for the partition tests (helpers, no tests): each is
an async context manager that makes a partition, yields who can still sell and a check
that the partition is real, and heals it on exit.

(a) a till's nats-server SIGKILLed: the till's supervisor restarts it;
(b) a till process SIGSTOPped, then SIGCONTed;
(c) the store <-> HQ leaf link down: HQ's process frozen and its nats-server killed, so
    the leaf connections really drop (refused) until HQ thaws and restarts its server;
(d) the store cluster split: till t1's nats-server SIGSTOPped while t1 keeps selling
    locally and t2/t3 keep selling, then SIGCONT.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import psutil

from broker.server import http_get
from tests.e2e.harness import Mesh, signal_and_wait, wait_until

T1, T2, T3, HQ = "s1/t1", "s1/t2", "s1/t3", "hq"


@dataclass
class Cut:
    sellers: list[str]  # who can sell while it lasts
    check: Callable[[], Awaitable[None]]  # asserts the partition is real (after selling)


Fault = Callable[[Mesh], contextlib.AbstractAsyncContextManager[Cut]]


async def vv(mesh: Mesh, rid: str) -> dict[str, int]:
    vector: dict[str, int] = (await mesh[rid].status(digest=False))["version_vector"]
    return vector


@contextlib.asynccontextmanager
async def nats_server_killed(mesh: Mesh) -> AsyncIterator[Cut]:
    t1 = mesh[T1]
    old = await t1.nats_server_pid()
    os.kill(old, signal.SIGKILL)

    async def check() -> None:
        assert not psutil.pid_exists(old) or psutil.Process(old).status() == "zombie"

    yield Cut(mesh.tills, check)

    async def restarted() -> int | None:
        pid = await t1.nats_server_pid()
        return pid if pid != old else None

    new = await wait_until(restarted, "t1's supervisor to restart its nats-server", 30)
    assert psutil.Process(new).ppid() == t1.pid


@contextlib.asynccontextmanager
async def till_frozen(mesh: Mesh) -> AsyncIterator[Cut]:
    t1 = mesh[T1]
    seen = await vv(mesh, T1)
    await t1.freeze()

    async def check() -> None:
        assert mesh[T1].popen is not None and psutil.Process(t1.pid).status() == "stopped"
        assert (await vv(mesh, T2)).get(T1, 0) == seen.get(T1, 0)

    try:
        yield Cut([T2, T3], check)
    finally:
        await t1.thaw()


@contextlib.asynccontextmanager
async def hq_cut_off(mesh: Mesh) -> AsyncIterator[Cut]:
    hq = mesh[HQ]
    server = await hq.nats_server_pid()
    await hq.freeze()  # its supervisor cannot restart the server until thawed
    try:
        await signal_and_wait(server, signal.SIGKILL)

        async def leaf_down() -> bool:
            return all([await leafnodes(mesh, t) == 0 for t in mesh.tills])

        await wait_until(leaf_down, "every till's leaf link to HQ to drop", 20)

        async def check() -> None:
            assert all([await leafnodes(mesh, t) == 0 for t in mesh.tills])
            for till in mesh.tills:
                assert (await mesh[till].status(digest=False))["unsynced_to_hq"] > 0

        yield Cut(mesh.tills, check)
    finally:
        await hq.thaw()


async def leafnodes(mesh: Mesh, rid: str) -> int:
    status, body = await http_get(mesh.site.host, mesh.site.ports[rid].monitor, "/leafz")
    assert status == 200
    return int(json.loads(body)["leafnodes"])


@contextlib.asynccontextmanager
async def store_split(mesh: Mesh) -> AsyncIterator[Cut]:
    server = await mesh[T1].nats_server_pid()
    before = {rid: await vv(mesh, rid) for rid in (T1, T2)}
    await signal_and_wait(server, signal.SIGSTOP)

    async def check() -> None:
        # t1 sold, but nobody else saw it; t1 saw nobody else's sales.
        assert (await vv(mesh, T1))[T1] > before[T1].get(T1, 0)
        for rid in (T2, T3, HQ):
            assert (await vv(mesh, rid)).get(T1, 0) == before[T1].get(T1, 0), rid
        assert (await vv(mesh, T1)).get(T2, 0) == before[T1].get(T2, 0)
        assert (await vv(mesh, T2))[T2] > before[T1].get(T2, 0)

    try:
        yield Cut(mesh.tills, check)
    finally:
        await signal_and_wait(server, signal.SIGCONT)


FAULTS: dict[str, Fault] = {
    "nats_server_killed": nats_server_killed,
    "till_frozen": till_frozen,
    "hq_cut_off": hq_cut_off,
    "store_split": store_split,
}


async def sell_through(mesh: Mesh, fault: Fault, *, hold: float, min_rounds: int) -> None:
    """Sell on every side for `hold` seconds (at least `min_rounds` rounds) inside the
    fault, check the cut is real, heal, sell again, and check full convergence."""
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()  # nothing in flight: the cut checks see only the partition
    async with fault(mesh) as cut:
        deadline, rounds = time.monotonic() + hold, 0
        while rounds < min_rounds or (time.monotonic() < deadline and rounds < 100_000):
            await mesh.sell_everywhere(cut.sellers, rounds=1)
            rounds += 1
        await cut.check()
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.converge_and_check()
