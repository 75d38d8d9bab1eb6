"""HQ's folded state on PostgreSQL (`replicas.hq.folded`) after a large backlog: a read
folds at most READ_BUDGET events before it answers and says how far behind it is; the
follower folds the rest in slices once the worker is not ingesting, to the same state a
single full fold reaches, then publishes its conflicts into PostgreSQL (`bi_conflicts`)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import psycopg
import pytest

from conflict import queries
from conflict.detect import detect
from conflict.policies import from_state
from core.events import encode_event
from replicas.hq import folded as folded_module
from replicas.hq.folded import FoldedState
from replicas.hq.store import PgLog
from tests.e2e.harness import wait_until
from tests.factories import cash_sale, chain

PER_TILL = 40


@pytest.fixture
async def backlog(pg_dsn: str) -> int:
    """Two tills' sales in PostgreSQL: the events HQ took in while nothing read them."""
    log = await PgLog.open(pg_dsn)
    total = 0
    try:
        for till in ("s1/t1", "s1/t2"):
            bodies = [cash_sale(sku=f"SKU-{i % 3}", receipt=f"R{i}") for i in range(PER_TILL)]
            result = await log.ingest_raw([encode_event(e) for e in chain(till, bodies)])
            assert not result.rejected and len(result.stored) == PER_TILL
            total += PER_TILL
    finally:
        await log.close()
    return total


async def test_a_read_after_a_backlog_answers_after_its_budget_and_the_follower_folds_the_rest(
    tmp_path: Path, pg_dsn: str, backlog: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = FoldedState(tmp_path / "full.sqlite", pg_dsn)
    state = FoldedState(tmp_path / "followed.sqlite", pg_dsn)
    follower: asyncio.Task[None] | None = None
    try:
        everything = await full.read(queries.state_digest)  # the whole backlog in one read
        assert full.behind == 0
        monkeypatch.setattr(folded_module, "READ_BUDGET", 25)
        monkeypatch.setattr(folded_module, "FOLLOW_SLICE", 10)

        partial = await state.read(queries.state_digest)
        assert state.behind == backlog - 25 and partial != everything
        sales = await state.read(lambda c: c.execute("SELECT count(*) FROM st_sales").fetchone())
        assert sales == (50,) and state.behind == backlog - 50  # each read folds its budget

        asked = []  # the worker ingests for the first 3 turns: the follower waits

        def busy() -> bool:
            asked.append(state.behind)
            return len(asked) <= 3

        follower = asyncio.create_task(state.follow(busy=busy))

        async def caught_up() -> bool:
            return state.behind == 0

        await wait_until(caught_up, "the follower to fold the backlog", 30, every=0.02)
        assert asked[:4] == [backlog - 50] * 4  # nothing folded while busy
        assert await state.read(queries.state_digest) == everything

        # caught up, it publishes the fold's conflicts for BI tools: the API's list
        listed = await state.read(lambda c: detect(c, from_state(c)))
        # three SKUs sold, never stocked; both tills used receipts R0-R39
        assert {c.kind for c in listed} == {"oversell", "receipt_collision"}

        async def published() -> bool:
            with psycopg.connect(pg_dsn) as conn:
                at = conn.execute("SELECT digest FROM hq_conflicts_at").fetchone()
                rows = conn.execute(
                    "SELECT id, kind, subject, store, open, events FROM bi_conflicts ORDER BY id"
                ).fetchall()
            want = sorted((c.id, c.kind, c.subject, c.store, True, len(c.events)) for c in listed)
            return at == (everything,) and rows == want

        await wait_until(published, "the conflicts in hq_conflicts", 10, every=0.05)
    finally:
        if follower is not None:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
        state.close()
        full.close()
