"""HQ's API on PostgreSQL: `/reports/*`, `/conflicts`, `/state/digest` and `/sales/{id}`
answer as HQ on SQLite does for the same events, a conflict is resolved through it,
HQ's catalog writes (HQ's own signed-or-not events) land in its read model, and its
`/keys/*` routes answer and write as HQ on SQLite's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.config import free_port
from core.events import HQ, CardDeclined, ProductUpserted, StockReceived
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from replicas.api.app import create_app
from replicas.api.auth import POLICY
from replicas.hq.api import PgReads, create_hq_app, create_worker_app
from replicas.hq.folded import FoldedState
from replicas.hq.store import PgLog
from replicas.metrics import ReplicaMetrics
from tests.conflict.factory import sale_body
from tests.replicas.api_kit import (
    FakeReplica,
    api_routes,
    cash,
    client_for,
    from_hq,
    open_log,
    sell,
)

TILL = "s1/t1"
QUERIES: list[tuple[str, dict[str, str | int]]] = [
    ("/reports/sales", {"by": "store,till,day,hour"}),
    ("/reports/sales", {"by": "cashier", "utc_offset": -300}),
    ("/reports/payments", {}),
    ("/reports/payments", {"store": "s1", "since": "2020-01-01"}),
    ("/reports/items", {"top": 1}),
    ("/reports/stock", {"below": 100}),
    ("/reports/stock", {"store": "s2"}),
    ("/reports/tax", {}),
    ("/reports/tax", {"store": "s1", "utc_offset": 60}),
    ("/shifts/sh1", {}),
    ("/reports/declines", {}),
    ("/reports/declines", {"store": "s2"}),
    ("/cards/limits", {"store": "s1"}),
]


@dataclass
class PgHandle:
    """What HQ's PostgreSQL app reads of a running worker, without its network."""

    replica_id: str
    log: PgLog

    def sync_status(self) -> dict[str, object]:
        return {}

    def online(self) -> bool:
        return False

    def holders(self, origin: str, seq: int) -> list[str]:
        return [self.replica_id] if self.log.version_vector().get(origin, 0) >= seq else []

    def unsynced_to_hq(self) -> int:
        return 0

    @property
    def uplink_names(self) -> list[str]:
        return []


@pytest.fixture
async def both(
    tmp_path: Path, pg_dsn: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """HQ on SQLite and HQ on PostgreSQL, each having ingested one till's sales (taxed at
    20 % in the price) in a shift, one voided, one refunded in part, and two card
    payments it took offline: one declined, one outstanding."""
    till = await open_log(tmp_path / "till.db", TILL)
    cola = ProductUpserted(sku="COLA", name="Cola 33cl", price=150, tax_rate_bp=2000)
    await from_hq(till, cola)
    await till.append(StockReceived(sku="COLA", qty=10))
    async with client_for(FakeReplica(TILL, till)) as c:
        opened = await c.post("/shifts", json={"shift": "sh1", "float_amount": 1000})
        assert opened.status_code == 201, opened.text
        kept = await sell(c, shift="sh1")
        await sell(c, payments=[cash(500)], cashier="ann", shift="sh1")
        gone = await sell(c, lines=[{"sku": "COLA", "qty": 1}], payments=[cash(200)])
        assert (await c.post(f"/sales/{gone['sale_id']}/void")).status_code == 201
        back = {"lines": [{"line": 0, "qty": 1}]}
        assert (await c.post(f"/sales/{kept['sale_id']}/refunds", json=back)).status_code == 201
    declined = await till.append(sale_body([("COLA", 1, 150)], "C1", card="deferred"))
    await till.append(sale_body([("COLA", 2, 150)], "C2", card="deferred"))
    await till.append(CardDeclined(payment=f"{declined.id}#0", reason="do not honour"))
    raws = [*await till.read_range(HQ, 1, 100), *await till.read_range(TILL, 1, 100)]
    await till.close()
    sqlite_hq = await open_log(tmp_path / "hq.db", HQ)
    pg_hq = await PgLog.open(pg_dsn)
    metrics = ReplicaMetrics()
    pg_hq.commit_observers.append(metrics.on_commit)
    reads = PgReads(pg_dsn)
    folded = FoldedState(tmp_path / "folded.sqlite", pg_dsn)
    for hq in (sqlite_hq, pg_hq):
        result = await hq.ingest_raw(raws)
        assert not result.rejected and len(result.stored) == len(raws)
    sqlite_app = create_app(FakeReplica(HQ, sqlite_hq))
    pg_app = create_hq_app(PgHandle(HQ, pg_hq), reads, metrics=metrics, folded=folded)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=sqlite_app), base_url="http://a") as a,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=pg_app), base_url="http://b") as b,
    ):
        yield a, b
    folded.close()
    reads.close()
    await pg_hq.close()
    await sqlite_hq.close()


async def test_reports_answer_the_same_on_sqlite_and_postgres(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    on_sqlite, on_pg = both
    for path, params in QUERIES:
        a, b = await on_sqlite.get(path, params=params), await on_pg.get(path, params=params)
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        assert a.json() == b.json(), (path, params)
    assert (await on_pg.get("/reports/sales", params={"by": "weekday"})).status_code == 422
    assert (await on_pg.get("/shifts/nope")).status_code == 404
    tax = (await on_pg.get("/reports/tax")).json()  # 2 kept sales of 2 at 150, 20 % in it
    assert [(r["rate_bp"], r["gross"], r["tax"], r["refunded_tax"]) for r in tax] == [
        (None, 450, 0, 0),  # the card sales: made without tax recorded
        (2000, 600, 100, 25),
    ]
    assert (await on_pg.get("/shifts/sh1")).json()["tax"] == 75
    a, b = await on_sqlite.get("/reports/exposure"), await on_pg.get("/reports/exposure")
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    exposure = a.json(), b.json()
    for rows in exposure:  # each measured by its own clock: a second may part them
        assert all(r.pop("oldest_age_s") >= 0 for r in rows)
    assert exposure[0] == exposure[1] == [
        {"store": "s1", "till": TILL, "payments": 1, "amount": 300,
         "oldest_hlc": exposure[1][0]["oldest_hlc"]}
    ]  # fmt: skip
    declines = (await on_pg.get("/reports/declines")).json()
    assert declines == [
        {"store": "s1", "outcome": "declined", "decision": "open", "payments": 1, "amount": 150}
    ]
    cards = [(r["settlement"], r["amount"]) for r in (await on_pg.get("/reports/payments")).json()
             if r["method"] == "card"]  # fmt: skip
    assert cards == [("declined", 150), ("outstanding", 300)]


async def test_conflicts_digest_and_sales_answer_the_same_on_sqlite_and_postgres(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    on_sqlite, on_pg = both
    for path in ("/conflicts", "/conflicts?open=true", "/state/digest", f"/sales/{TILL}:5"):
        a, b = await on_sqlite.get(path), await on_pg.get(path)
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        assert a.json() == b.json(), path
    assert (await on_pg.get("/sales/s1/t1:999")).status_code == 404
    sale = (await on_pg.get(f"/sales/{TILL}:5")).json()
    assert (sale["total"], sale["voided"], sale["delivery"]["at_hq"]) == (150, True, True)
    found = (await on_pg.get("/conflicts")).json()
    assert [(c["kind"], c["resolution"]) for c in found] == [("card_declined", None)]
    decide = {"action": "written_off", "by": "hq-mgr", "reason": "customer gone"}
    r = await on_pg.post(f"/conflicts/{found[0]['id']}/resolve", json=decide)
    assert r.status_code == 201 and r.json()["events"] == ["hq:2"], r.text
    assert (await on_pg.get("/conflicts", params={"open": True})).json() == []
    done = (await on_pg.get("/conflicts")).json()[0]["resolution"]
    assert (done["action"], done["by"], done["event"]) == ("written_off", "hq-mgr", "hq:2")
    again = await on_pg.post(f"/conflicts/{found[0]['id']}/resolve", json=decide)
    assert again.status_code == 409, again.text
    before = (await on_sqlite.get("/state/digest")).json()
    assert (await on_pg.get("/state/digest")).json() != before  # the resolution is state


async def test_catalog_writes_at_hq_on_postgres(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, on_pg = both
    r = await on_pg.put("/catalog/TEA", json={"name": "Tea", "price": 250})
    assert r.status_code == 200, r.text
    assert r.json()["event_id"] == "hq:2"  # after the COLA product HQ wrote before
    r = await on_pg.put("/catalog/TEA/price", json={"price": 275})
    assert r.status_code == 200 and r.json()["product"]["price"] == 275, r.text
    catalog = (await on_pg.get("/catalog")).json()
    assert [(p["sku"], p["price"]) for p in catalog] == [("COLA", 150), ("TEA", 275)]
    status = (await on_pg.get("/status")).json()
    # a delivery, a shift, 3 sales, a void, a refund, 2 card sales, a decline
    assert status["version_vector"] == {HQ: 3, TILL: 10}
    assert status["sales"]["sales"] == 5 and status["sales"]["voided"] == 150
    assert status["card_exposure"]["payments"] == 1
    assert status["card_exposure"]["amount"] == 300
    assert (await on_pg.get("/catalog/NOPE")).status_code == 404


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_of_hq_on_postgres_parse_and_move_with_sales(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, on_pg = both
    before = _samples((await on_pg.get("/metrics")).text)
    assert before[("tillmesh_sales", ())] == 5
    assert before[("tillmesh_log_events", ())] == 11  # HQ's product, the till's 10 events
    ingested = sum(v for (n, _), v in before.items() if n == "tillmesh_events_ingested_total")
    assert ingested == 11
    assert (await on_pg.put("/catalog/TEA", json={"name": "Tea", "price": 250})).status_code == 200
    after = _samples((await on_pg.get("/metrics")).text)
    assert after[("tillmesh_events_appended_total", ())] == 1
    assert after[("tillmesh_log_events", ())] == 12


async def test_card_limits_set_at_hq_on_postgres(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    _, on_pg = both
    default = (await on_pg.get("/cards/limits", params={"store": "s1"})).json()
    every = {"per_payment": 5000, "till_total": 20_000, "till_count": 4, "max_age_s": 600}
    r = await on_pg.put("/cards/limits", json=every)
    assert r.status_code == 201 and r.json()["event_id"] == "hq:2", r.text
    s1 = {**every, "per_payment": 7000, "store": "s1"}
    assert (await on_pg.put("/cards/limits", json=s1)).status_code == 201
    assert (await on_pg.get("/cards/limits", params={"store": "s2"})).json() == every
    got = (await on_pg.get("/cards/limits", params={"store": "s1"})).json()
    assert got == {**every, "per_payment": 7000} != default
    bad = await on_pg.put("/cards/limits", json={**every, "max_age_s": 1})
    assert bad.status_code == 422


async def test_a_worker_hands_hqs_writes_to_worker_0_and_says_so_when_it_is_not_there(
    pg_dsn: str,
) -> None:
    """Worker K > 0 takes HQ's write routes and forwards them to worker 0 (the success
    path over real HTTP is in tests/e2e/test_e2e_hq_postgres.py); with nothing at worker
    0's address, a 503 naming it. Reads it answers from the database itself."""
    front = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    log = await PgLog.open(pg_dsn, HQ, owns=lambda origin: origin.startswith("s1/"))
    reads = PgReads(pg_dsn)
    app = create_worker_app(PgHandle(HQ, log), reads, ReplicaMetrics(), front)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://w1"
        ) as w1:
            for method, path, body in [
                ("PUT", "/catalog/TEA", {"name": "Tea", "price": 250}),
                ("PUT", "/catalog/TEA/price", {"price": 275}),
                ("POST", "/conflicts/abc/resolve", {"action": "accepted"}),
                ("POST", f"/keys/{TILL}/revoke", {"after_seq": 3}),
                ("POST", f"/keys/{TILL}/rotate", {"public_key": "A" * 43, "from_seq": 4}),
                ("POST", "/keys/rotate", {}),
            ]:
                r = await w1.request(method, path, json=body)
                assert r.status_code == 503, (path, r.text)
                assert "worker 0" in r.json()["detail"] and front in r.json()["detail"]
            assert (await w1.get("/catalog")).json() == []
            assert (await w1.get("/reports/sales")).status_code == 200
            assert (await w1.get("/status")).status_code == 404  # worker 0's
    finally:
        reads.close()
        await log.close()


async def test_keys_revoked_and_rotated_at_hq_on_postgres_as_on_sqlite(
    both: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """The same answers, refusals included, and the same HQ events: the revocation takes
    what the till wrote after seq 5 out of every figure on both."""
    on_sqlite, on_pg = both
    before = (await on_pg.get("/reports/sales")).json()
    key = encode_public_key(Ed25519Signer(new_signing_seed(), tagged=True).public_key)
    calls = [
        ("/keys/rotate", {}),  # HQ's own key: a new site bundle
        ("/keys/hq/revoke", {"after_seq": 1}),
        ("/keys/nope/rotate", {"public_key": key, "from_seq": 3}),
        (f"/keys/{TILL}/rotate", {"public_key": "short", "from_seq": 11}),
        (f"/keys/{TILL}/rotate", {"public_key": key, "from_seq": 11, "reason": "new disk"}),
        (f"/keys/{TILL}/revoke", {"after_seq": 5, "reason": "stolen"}),
    ]
    for path, body in calls:
        a, b = await on_sqlite.post(path, json=body), await on_pg.post(path, json=body)
        assert a.status_code == b.status_code, (path, a.text, b.text)
        if a.status_code == 201:
            assert a.json()["event_id"] == b.json()["event_id"], path
        else:
            assert a.status_code == 422 and a.json() == b.json(), (path, a.text)
    assert b.json()["event_id"] == "hq:3"  # the revocation, after the rotation's hq:2
    for path, params in [*QUERIES, ("/state/digest", {}), ("/conflicts", {})]:
        a, b = await on_sqlite.get(path, params=params), await on_pg.get(path, params=params)
        assert a.status_code == b.status_code == 200, (path, a.text, b.text)
        assert a.json() == b.json(), (path, params)
    assert (await on_pg.get("/reports/sales")).json() != before
    assert (await on_pg.get("/status")).json()["version_vector"] == {HQ: 3, TILL: 10}


async def test_every_route_of_hq_on_postgres_is_in_the_policy(pg_dsn: str, tmp_path: Path) -> None:
    """Worker 0's routes and worker K's, `/keys/*` among them: authorised, never refused
    for want of a policy (`replicas.api.auth.authorize` fails closed)."""
    log = await PgLog.open(pg_dsn, HQ)
    reads, folded = PgReads(pg_dsn), FoldedState(tmp_path / "folded.sqlite", pg_dsn)
    try:
        handle = PgHandle(HQ, log)
        apps = [
            create_hq_app(handle, reads, metrics=ReplicaMetrics(), folded=folded),
            create_worker_app(handle, reads, ReplicaMetrics(), "http://127.0.0.1:1"),
        ]
        for app in apps:
            routes = {(m, r.path) for r in api_routes(app.routes) for m in r.methods or ()}
            assert routes <= set(POLICY), routes - set(POLICY)
            assert ("POST", "/keys/{replica:path}/revoke") in routes
            assert ("POST", "/keys/{replica:path}/rotate") in routes
    finally:
        folded.close()
        reads.close()
        await log.close()
