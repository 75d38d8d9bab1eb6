"""`tillmesh conflicts` and `tillmesh resolve` given HQ's postgresql:// database.

The same events go to a SQLite HQ log and to HQ on PostgreSQL; `tillmesh conflicts` (a
real subprocess) must print the same on both, as text and as JSON, every option alike:
oversells, a receipt collision, a resolved conflict with the later decision it
superseded, a catalog override, an equivocation kept as evidence. `tillmesh resolve`
on the DSN refuses, naming HQ's API route: HQ's own chain has one writer, worker 0.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from conflict.conflicts import conflict_id
from conflict.detect import detect
from conflict.policies import Policies, from_state
from conflict.state import StoreState
from core.events import ConflictResolved, PriceSet, ProductUpserted, StockReceived
from core.fold import Accepted
from replicas.hq import conflicts as pg_conflicts
from replicas.hq import folded
from tests.conflict.factory import Chain, apply_all, fresh_db, sale_body
from tests.e2e.harness import TILLMESH
from tests.replicas.hq.pg_kit import through_both

MS = 1_000_000


def tillmesh(*args: object) -> subprocess.CompletedProcess[str]:
    argv = [*TILLMESH, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _oversell_id(sold: list[Accepted]) -> str:
    """The id of the oversell `sold` makes in s1, as a fold of them detects it."""
    conn = apply_all(StoreState(), fresh_db(StoreState()), sold)
    (found,) = [c for c in detect(conn, Policies()) if c.kind == "oversell" and c.store == "s1"]
    return found.id


def _story() -> list[Accepted]:
    chain, twin = Chain(), Chain()
    sold = [
        chain.make("s1/t1", sale_body([("A", 2, 100)], "R1"), MS),
        chain.make("s1/t2", sale_body([("A", 1, 100)], "R1"), MS + 5),  # same receipt
        chain.make("s2/t1", sale_body([("B", 3, 200)], "R7"), MS + 6),
        chain.make("hq", ProductUpserted(sku="A", name="tea", price=100, tax_rate_bp=0), MS),
        chain.make("hq", PriceSet(sku="A", price=999), MS + 9_000_000),  # far ahead
        chain.make("s2/t1", StockReceived(sku="B", qty=1), MS + 20),
    ]
    oversell = _oversell_id(sold)
    later = [
        chain.make("s1/t1", ConflictResolved(conflict=oversell, action="accept", by="ana",
                                             reason="found more"), MS + 30),
        chain.make("s1/t2", ConflictResolved(conflict=oversell, action="accept", by="bo",
                                             reason="me too"), MS + 40),
        chain.make("hq", ConflictResolved(
            conflict=conflict_id("catalog_override", "A", ["hq:2"]), action="supersede",
            by="hq", reason="wrong clock", supersedes=["hq:2"]), MS + 50),
    ]  # fmt: skip
    forged = [twin.make("s2/t1", sale_body([("B", 9, 1)], "R7"), MS + 6)]  # s2/t1:1 twice
    return sold + later + forged


OPTIONS = ([], ["--open"], ["--kind", "oversell"], ["--json"], ["--recompute"])


def test_conflicts_on_postgres_print_what_they_print_on_sqlite(pg_dsn: str, tmp_path: Path) -> None:
    db = tmp_path / "log.db"
    asyncio.run(through_both(_story(), [9], db, pg_dsn))
    for options in OPTIONS:
        on_sqlite = tillmesh("conflicts", db, *options)
        on_pg = tillmesh("conflicts", pg_dsn, *options)
        assert (on_pg.returncode, on_pg.stderr) == (0, ""), options
        assert on_pg.stdout == on_sqlite.stdout, options
    # and it shows what the story made (the same empty listing would pass the above)
    listed = json.loads(tillmesh("conflicts", pg_dsn, "--json").stdout)
    kinds = sorted(c["kind"] for c in listed)
    assert kinds == ["catalog_override", "equivocation", "oversell", "oversell",
                     "receipt_collision"], kinds  # fmt: skip
    (resolved,) = [c for c in listed if c["kind"] == "oversell" and not c["open"]]
    assert (resolved["resolution"]["by"], [r["by"] for r in resolved["superseded"]]) == (
        "ana",
        ["bo"],
    )
    text = tillmesh("conflicts", pg_dsn).stdout
    assert "equivocation  s2/t1:1" in text and "4 conflict(s), 2 open, 1 equivocation(s)" in text


def test_resolve_on_postgres_names_hq_s_api(pg_dsn: str, tmp_path: Path) -> None:
    asyncio.run(through_both(_story(), [], tmp_path / "log.db", pg_dsn))
    done = tillmesh("resolve", pg_dsn, "abc123", "--action", "accept", "--by", "ana",
                    "--reason", "x")  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr == (
        "tillmesh: error: HQ on PostgreSQL does not resolve from a database: HQ's events are"
        " written by its ingest worker 0, through HQ's API: POST /conflicts/abc123/resolve"
        " (with a manager's token)\n"
    )
    assert "abc123" not in tillmesh("conflicts", pg_dsn).stdout  # nothing appended


def test_conflicts_on_postgres_fold_every_event_not_a_read_s_budget(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read of HQ's folded state folds at most READ_BUDGET events (the rest later, in
    the background); the command has no later: it folds them all first."""
    asyncio.run(through_both(_story(), [], tmp_path / "log.db", pg_dsn))
    monkeypatch.setattr(folded, "READ_BUDGET", 2)
    found = pg_conflicts.read_folded(pg_dsn, None, lambda c: detect(c, from_state(c)))
    assert sorted(c.kind for c in found) == [
        "catalog_override", "oversell", "oversell", "receipt_collision",
    ]  # fmt: skip
