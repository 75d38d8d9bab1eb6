"""HQ on PostgreSQL gives the figures HQ on SQLite gives, for the same events.

The same events go through the real ingest paths of both (`core.log.EventLog` with the
SQLite fold, `replicas.hq.store.PgLog`), in the same batches; every report, the catalog
and the stock of every store must then be equal, for hypothesis' histories of sales
(taxed inclusive or exclusive, or from before tills computed tax), voids and refunds (of
known and unknown sales, giving back tax), counts, price writes and shifts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conflict import queries, reports
from conflict.reports import SALES_GROUPS, Window
from conflict.state import StoreState
from core.events import RawEvent, encode_event
from core.fold import Accepted
from core.log import EventLog
from replicas.hq import reports as pg_reports
from replicas.hq.schema import migrate
from replicas.hq.store import PgLog
from tests.conflict.factory import scenarios, split

WINDOWS = (
    Window(),
    Window(store="s1"),
    Window(since=1_000_500 << 16, until=1_040_000 << 16, utc_offset_min=-180),
    Window(utc_offset_min=13 * 60 + 45, store="hq"),
)
SHIFTS = ("sh1", "sh2", "nope")


def _raw(items: list[Accepted]) -> list[RawEvent]:
    return [RawEvent(a.event, encode_event(a.event)) for a in items]


def _figures_sqlite(conn: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"catalog": queries.catalog(conn)}
    for i, w in enumerate(WINDOWS):
        out[f"sales{i}"] = reports.sales_report(conn, SALES_GROUPS[:3], w)
        out[f"by_cashier{i}"] = reports.sales_report(conn, ["shift", "cashier"], w)
        out[f"payments{i}"] = reports.payments_report(conn, w)
        out[f"items{i}"] = reports.items_report(conn, w, 2)
        out[f"tax{i}"] = reports.tax_report(conn, w)
    for shift in SHIFTS:
        out[f"shift_{shift}"] = queries.shift_totals(conn, shift)
    out["stock"] = reports.stock_report(conn)
    out["low"] = reports.stock_report(conn, "s1", 3)
    out["prices"] = reports.prices_report(conn)
    out["prices_s1"] = reports.prices_report(conn, "s1")
    return out


def _figures_pg(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        out: dict[str, Any] = {"catalog": pg_reports.catalog(conn)}
        for i, w in enumerate(WINDOWS):
            out[f"sales{i}"] = pg_reports.sales_report(conn, SALES_GROUPS[:3], w)
            out[f"by_cashier{i}"] = pg_reports.sales_report(conn, ["shift", "cashier"], w)
            out[f"payments{i}"] = pg_reports.payments_report(conn, w)
            out[f"items{i}"] = pg_reports.items_report(conn, w, 2)
            out[f"tax{i}"] = pg_reports.tax_report(conn, w)
        for shift in SHIFTS:
            out[f"shift_{shift}"] = pg_reports.shift_totals(conn, shift)
        out["stock"] = pg_reports.stock_report(conn)
        out["low"] = pg_reports.stock_report(conn, "s1", 3)
        out["prices"] = pg_reports.prices_report(conn)
        out["prices_s1"] = pg_reports.prices_report(conn, "s1")
    return out


async def _through_both(
    events: list[Accepted], cuts: list[int], db: Path, dsn: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    sqlite_log = await EventLog.open(db, "hq", StoreState())
    pg_log = await PgLog.open(dsn, "hq")
    try:
        for batch in split(events, cuts):
            a = await sqlite_log.ingest(_raw(batch))
            b = await pg_log.ingest(_raw(batch))
            assert (len(a.stored), a.duplicates, a.held) == (len(b.stored), b.duplicates, b.held)
        assert pg_log.version_vector() == sqlite_log.version_vector()
        return await sqlite_log.read(_figures_sqlite), _figures_pg(dsn)
    finally:
        await sqlite_log.close()
        await pg_log.close()


def _reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn, dsn)
        tables = conn.execute(
            "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename LIKE 'hq\\_%' AND tablename NOT IN"
            " ('hq_schema', 'hq_meta') AND tablename NOT LIKE 'hq\\_events\\_%'"
        ).fetchone()
        assert tables is not None
        conn.execute(f"TRUNCATE {tables[0]}".encode())
        conn.execute("UPDATE hq_meta SET value = '{}' WHERE key = 'revoked'")


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(events=scenarios(60, tax=True), cuts=st.lists(st.integers(0, 60), max_size=4))
def test_reports_equal_on_sqlite_and_postgres(
    events: list[Accepted], cuts: list[int], pg_dsn: str, tmp_path: Path
) -> None:
    _reset(pg_dsn)
    db = tmp_path / f"hq-{len(list(tmp_path.iterdir()))}.db"
    on_sqlite, on_pg = asyncio.run(_through_both(events, cuts, db, pg_dsn))
    for name, rows in on_sqlite.items():
        assert on_pg[name] == rows, name
