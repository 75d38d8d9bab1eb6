"""`tillmesh conflicts` on HQ's PostgreSQL database: the conflicts of its events and the
equivocations it kept as evidence, as the SQLite HQ's log shows them.

The conflicts are read from the fold's own state, as HQ's API reads them (`folded.py`):
here a scratch copy, folded from the committed events into a temporary file by the
price policy the ingest workers run with (recorded in `hq_meta` when a worker opens the
database), so the command never writes to HQ nor to worker 0's state. It is the same
fold over the same events as a SQLite HQ's, so the same conflicts with the same ids.

Resolving is a write of HQ's own chain, which only the worker that owns HQ's origin
(worker 0) writes: `no_local_resolve` is the error naming HQ's API to use instead.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from conflict.catalog import PricePolicy
from conflict.policies import Policies
from conflict.state import DEFAULT_WINDOW_MS
from core.verify import Equivocated
from replicas.errors import WrittenThroughHq
from replicas.hq.connect import open_readonly
from replicas.hq.folded import FoldedState

__all__ = ["POLICY_KEY", "equivocations", "no_local_resolve", "price_policy", "read_folded"]

T = TypeVar("T")
POLICY_KEY = "price_policy"  # hq_meta: "<policy>/<window ms>", as the fold's st_config
RESOLVE_ROUTE = "POST /conflicts/{id}/resolve"


def price_policy(dsn: str) -> tuple[PricePolicy, int]:
    """The price policy and window HQ's workers fold with (the defaults if none recorded)."""
    with open_readonly(dsn) as pg:
        row = pg.execute("SELECT value FROM hq_meta WHERE key = %s", (POLICY_KEY,)).fetchone()
    if row is None:
        return "latest", DEFAULT_WINDOW_MS
    policy, _, window = str(row[0]).partition("/")
    return policy, int(window)  # type: ignore[return-value]  # written from a PricePolicy


def read_folded(dsn: str, policies: Policies | None, fn: Callable[[sqlite3.Connection], T]) -> T:
    """`fn(state)` on the database's events folded afresh into a scratch state, by the
    policy in `policies`, else the one the workers run with."""
    if policies is None:
        price, window = price_policy(dsn)
    else:
        price, window = policies.price, policies.concurrency_window_ms
    with tempfile.TemporaryDirectory(prefix="tillmesh-conflicts-") as scratch:
        state = FoldedState(Path(scratch) / "folded-state.sqlite", dsn, price, window)
        try:
            # a read folds at most READ_BUDGET events; all of them here, in its thread
            return asyncio.run(state.read(lambda _: fn(state.catch_up())))
        finally:
            state.close()


def equivocations(dsn: str) -> list[Equivocated]:
    """The twins HQ kept as evidence, as `core.verify.equivocations` reads a log's."""
    with open_readonly(dsn) as pg:
        rows = pg.execute(
            "SELECT origin, seq, peer, received_ms, detail FROM hq_quarantine"
            " WHERE kind = 'Equivocation' ORDER BY id"
        ).fetchall()
    return [Equivocated(str(o), int(s), str(p), int(r), str(d)) for o, s, p, r, d in rows]


def no_local_resolve(conflict_id: str) -> WrittenThroughHq:
    return WrittenThroughHq("resolve", RESOLVE_ROUTE.format(id=conflict_id), "manager")
