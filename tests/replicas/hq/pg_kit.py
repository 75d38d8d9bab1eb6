"""Feeding the same events to HQ on SQLite and HQ on PostgreSQL and reading back every
figure both give: the SQLite log (`core.log.EventLog` with the SQLite fold) and
`replicas.hq.store.PgLog` with its folded state (`replicas.hq.folded`), through their
real ingest paths, in the same batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
from hypothesis import HealthCheck, settings

from conflict import cards, queries, reports
from conflict.detect import detect
from conflict.policies import from_state
from conflict.reports import SALES_GROUPS, Window
from conflict.state import StoreState
from core.batch import IngestResult
from core.events import Event, RawEvent, encode_event
from core.fold import Accepted
from core.log import EventLog
from core.signing import Verifier
from replicas.hq import reports as pg_reports
from replicas.hq.folded import FoldedState
from replicas.hq.schema import migrate
from replicas.hq.store import PgLog
from tests.conflict.factory import split

WINDOWS = (
    Window(),
    Window(store="s1"),
    Window(since=1_000_500 << 16, until=1_040_000 << 16, utc_offset_min=-180),
    Window(utc_offset_min=13 * 60 + 45, store="hq"),
)
SHIFTS = ("sh1", "sh2", "nope")
STORES = ("s1", "s2", "hq", "s9", "")
NOW_MS = 1_100_000  # the clock offline exposure's ages are measured by


def raw_of(items: list[Accepted]) -> list[RawEvent]:
    return [RawEvent(a.event, encode_event(a.event)) for a in items]


# The SQLite HQ's readers under the names HQ's PostgreSQL reports give them, so one
# function asks both the same questions.
SQLITE_READS = SimpleNamespace(
    catalog=queries.catalog,
    shift_totals=queries.shift_totals,
    card_limits=cards.card_limits,
    sales_report=reports.sales_report,
    payments_report=reports.payments_report,
    items_report=reports.items_report,
    tax_report=reports.tax_report,
    deferred_cards=reports.deferred_cards,
    offline_exposure=reports.offline_exposure,
    declines_report=reports.declines_report,
    stock_report=reports.stock_report,
    prices_report=reports.prices_report,
)


def figures(conn: Any, r: Any) -> dict[str, Any]:
    """Every report figure, read through `r` (SQLITE_READS or `replicas.hq.reports`)."""
    out: dict[str, Any] = {"catalog": r.catalog(conn)}
    for i, w in enumerate(WINDOWS):
        out[f"sales{i}"] = r.sales_report(conn, SALES_GROUPS[:3], w)
        out[f"by_cashier{i}"] = r.sales_report(conn, ["shift", "cashier"], w)
        out[f"payments{i}"] = r.payments_report(conn, w)
        out[f"items{i}"] = r.items_report(conn, w, 2)
        out[f"tax{i}"] = r.tax_report(conn, w)
        out[f"deferred{i}"] = r.deferred_cards(conn, w)
    for shift in SHIFTS:
        out[f"shift_{shift}"] = r.shift_totals(conn, shift)
    for store in STORES:
        out[f"limits_{store}"] = r.card_limits(conn, store)
        out[f"exposure_{store}"] = r.offline_exposure(conn, store or None, NOW_MS)
        out[f"declines_{store}"] = r.declines_report(conn, store or None)
    out["stock"] = r.stock_report(conn)
    out["low"] = r.stock_report(conn, "s1", 3)
    out["prices"] = r.prices_report(conn)
    out["prices_s1"] = r.prices_report(conn, "s1")
    return out


def state_reads(conn: Any) -> dict[str, Any]:
    """What HQ reads of the fold's own state: conflicts, the digest, every sale."""
    ids = [i for (i,) in conn.execute("SELECT id FROM st_sales ORDER BY id")]
    return {
        "conflicts": detect(conn, from_state(conn)),
        "digest": queries.state_digest(conn),
        "sales": [queries.sale(conn, i) for i in [*ids, "s9/t9:1"]],
    }


def figures_pg(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        return figures(conn, pg_reports)


async def through_both(
    events: list[Accepted], cuts: list[int], db: Path, dsn: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    sqlite_log = await EventLog.open(db, "hq", StoreState())
    pg_log = await PgLog.open(dsn, "hq")
    folded = FoldedState(db.with_suffix(".folded"), dsn)
    try:
        for batch in split(events, cuts):
            a = await sqlite_log.ingest(raw_of(batch))
            b = await pg_log.ingest(raw_of(batch))
            assert (len(a.stored), a.duplicates, a.held) == (len(b.stored), b.duplicates, b.held)
            await folded.read(lambda c: None)  # folded batch by batch, as HQ reads them
        assert pg_log.version_vector() == sqlite_log.version_vector()
        on_sqlite = await sqlite_log.read(lambda c: {**figures(c, SQLITE_READS), **state_reads(c)})
        return on_sqlite, {**figures_pg(dsn), **await folded.read(state_reads)}
    finally:
        folded.close()
        await sqlite_log.close()
        await pg_log.close()


def reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, dsn)
        tables = conn.execute(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename LIKE 'hq\\_%' AND tablename NOT IN"
            " ('hq_schema', 'hq_meta') AND tablename NOT LIKE 'hq\\_events\\_%'"
        ).fetchone()
        assert tables is not None
        conn.execute(f"TRUNCATE {tables[0]}".encode())
        conn.execute("UPDATE hq_meta SET value = '{}' WHERE key IN ('revoked', 'keys')")


def outcome(r: IngestResult) -> tuple[int, int, int, list[str]]:
    """What one ingest did: stored, duplicates, held, the kinds refused."""
    return len(r.stored), r.duplicates, r.held, sorted(type(e).__name__ for e in r.rejected)


def raws(events: list[Event]) -> list[RawEvent]:
    return [RawEvent(ev, encode_event(ev)) for ev in events]


async def feed_frames(
    frames: Mapping[str, list[Event]], order: list[str], db: Path, dsn: str, keys: Verifier
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`frames` in `order`, one ingest each, into a SQLite HQ log at `db` and HQ on
    PostgreSQL at `dsn`, both checking with `keys`: each frame's outcome, the version
    vector, the evidence kept (origin, seq, kind), every figure and the folded state."""
    sqlite_log = await EventLog.open(db, "hq", StoreState(), verifier=keys)
    pg_log = await PgLog.open(dsn, "hq", verifier=keys)
    folded = FoldedState(db.with_suffix(".folded"), dsn)
    got: dict[str, Any] = {"sqlite": {"outcomes": []}, "pg": {"outcomes": []}}
    try:
        for name in order:
            got["sqlite"]["outcomes"].append(outcome(await sqlite_log.ingest(raws(frames[name]))))
            got["pg"]["outcomes"].append(outcome(await pg_log.ingest(raws(frames[name]))))
            await folded.read(lambda c: None)  # folded frame by frame, as HQ reads them
        got["sqlite"]["vv"], got["pg"]["vv"] = sqlite_log.version_vector(), pg_log.version_vector()
        got["sqlite"].update(await sqlite_log.read(
            lambda c: {**figures(c, SQLITE_READS), **state_reads(c),
                       "evidence": Counter(c.execute("SELECT origin, seq, kind FROM quarantine"))}
        ))  # fmt: skip
        with psycopg.connect(dsn) as conn:
            got["pg"].update(figures(conn, pg_reports))
            rows = conn.execute("SELECT origin, seq, kind FROM hq_quarantine").fetchall()
            got["pg"]["evidence"] = Counter((o, int(s), k) for o, s, k in rows)
        got["pg"].update(await folded.read(state_reads))
    finally:
        folded.close()
        await sqlite_log.close()
        await pg_log.close()
    return got["sqlite"], got["pg"]


def on_one_database(max_examples: int) -> settings:
    """Hypothesis settings for examples that share the test's one PostgreSQL database,
    `reset` between them (so the function-scoped `pg_dsn` fixture is meant)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
