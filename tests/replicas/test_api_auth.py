"""The API as a trust boundary: every write needs a token of the right role.

Against the real app over a real log, with tokens issued (so the API is not open):
no token is 401, a token of too low a role is 403 saying which role is needed, the
right role succeeds. A cashier sells at catalog prices only. Every route of the app
is in the policy table. Revoking a token takes effect at the next request. A replica
that would listen on the network with no token issued refuses to start.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.events import ProductUpserted, SaleCompleted
from core.log import EventLog
from replicas.api.app import create_app
from replicas.api.auth import POLICY, Access
from replicas.api.link import link_router
from replicas.api.tokens import Role, TokenStore
from replicas.cache import StateCache
from replicas.cli.main import main
from replicas.dashboard import mount_dashboard
from replicas.errors import ApiUnprotected
from replicas.metrics import ReplicaMetrics, metrics_router
from replicas.runtime import Replica
from replicas.site import init_site, load_site
from tests.factories import cash_sale, chain
from tests.replicas.api_kit import (
    Api,
    FakeReplica,
    SpecOnly,
    api_routes,
    event_body,
    open_log,
    token_api,
)

SALE = {"lines": [{"sku": "COLA", "qty": 1}], "payments": [{"method": "cash", "amount": 150}]}


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "log.db", "s1/t1")
    await log.append(ProductUpserted(sku="COLA", name="Cola", price=150))
    yield log
    await log.close()


@pytest.fixture
async def api(tmp_path: Path, log: EventLog) -> AsyncIterator[Api]:
    store = TokenStore(tmp_path / "api-tokens.json")
    tokens = {role.name: store.issue(f"{role.name} device", role.name) for role in Role}
    async with token_api(log, store, tokens) as api:
        yield api


async def _sold(api: Api) -> str:
    r = await api.call("manager", "POST", "/sales", SALE)
    assert r.status_code == 201, r.text
    return str(r.json()["sale_id"])


# (method, url, body, the lowest role that may, a role below it)
WRITES = [
    ("POST", "/sales", SALE, "cashier", "read_only"),
    ("POST", "/sales/{sale}/void", {"reason": "x"}, "cashier", "read_only"),
    ("POST", "/sales/{sale}/refunds", {"lines": [{"line": 0, "qty": 1}]}, "manager", "cashier"),
    ("POST", "/stock/COLA/receive", {"qty": 5}, "cashier", "read_only"),
    ("POST", "/stock/COLA/adjust", {"delta": -1, "reason": "broken"}, "manager", "cashier"),
    ("POST", "/stock/COLA/count", {"count": 3}, "manager", "cashier"),
    ("POST", "/shifts", {"float_amount": 100}, "cashier", "read_only"),
    ("PUT", "/catalog/COLA/price", {"price": 160}, "manager", "cashier"),
]


@pytest.mark.parametrize(("method", "url", "body", "allowed", "below"), WRITES)
async def test_each_write_needs_a_token_of_its_role(
    api: Api, method: str, url: str, body: Any, allowed: str, below: str
) -> None:
    url = url.format(sale=await _sold(api) if "{sale}" in url else "")
    nobody = await api.call(None, method, url, body)
    assert nobody.status_code == 401 and nobody.headers["www-authenticate"] == "Bearer"
    bogus = await api.client.request(
        method, url, json=body, headers={"Authorization": "Bearer tm_x_y"}
    )
    assert bogus.status_code == 401
    low = await api.call(below, method, url, body)
    assert low.status_code == 403, low.text
    assert f"needs the {allowed} role; this token is {below}" in low.text
    ok = await api.call(allowed, method, url, body)
    assert ok.is_success, ok.text


async def test_a_cashier_sells_at_catalog_prices_only(api: Api, log: EventLog) -> None:
    cheap = {**SALE, "lines": [{"sku": "COLA", "qty": 1, "unit_price": 1}],
             "payments": [{"method": "cash", "amount": 1}], "receipt": "OVR-1",
             "approval_reason": "damaged can"}  # fmt: skip
    r = await api.call("cashier", "POST", "/sales", cheap)
    assert r.status_code == 403, r.text
    assert "not the catalog price 150: that needs the manager role" in r.text
    plain = await api.call("cashier", "POST", "/sales", SALE)
    assert plain.status_code == 201
    approved = await api.call("manager", "POST", "/sales", cheap)
    assert approved.status_code == 201, approved.text
    # The approver is in the event itself, tied to the credential, and only there.
    body = await event_body(log, approved.json()["sale_id"])
    manager = api.record("manager")
    assert isinstance(body, SaleCompleted)
    assert (body.approved_by, body.approval_reason) == (f"manager device (token {manager.id})",
                                                         "damaged can")  # fmt: skip
    plain_body = await event_body(log, plain.json()["sale_id"])
    assert isinstance(plain_body, SaleCompleted) and plain_body.approved_by == ""
    again = await api.call("manager", "POST", "/sales", cheap)  # a retry: the same sale
    assert again.status_code == 200 and again.json() == approved.json()


async def test_reads_need_a_token_too_and_health_does_not(api: Api) -> None:
    assert (await api.call(None, "GET", "/status")).status_code == 401
    assert (await api.call("read_only", "GET", "/status")).status_code == 200
    assert (await api.call(None, "GET", "/healthz")).status_code == 200


async def test_metrics_and_the_dashboard_data_need_a_read_token(api: Api) -> None:
    for path in ("/metrics", "/dashboard/data"):
        assert (await api.call(None, "GET", path)).status_code == 401, path
        assert (await api.call("read_only", "GET", path)).status_code == 200, path
    page = await api.call(None, "GET", "/dashboard")  # the page itself, then it pairs
    assert page.status_code == 200 and "/static/dashboard.js" in page.text


async def test_a_revoked_token_is_refused_at_once(api: Api) -> None:
    (cashier,) = [r for r in api.store.records() if r.role == "cashier"]
    assert (await api.call("cashier", "GET", "/status")).status_code == 200
    api.store.revoke(cashier.id)
    assert (await api.call("cashier", "GET", "/status")).status_code == 401


def test_every_route_is_in_the_policy() -> None:
    """Every route a replica serves: the API's, the link's, /metrics, HQ's dashboard."""
    app = create_app(SpecOnly())  # type: ignore[arg-type]
    app.include_router(link_router(SpecOnly()))  # type: ignore[arg-type]
    cache = StateCache(None)  # type: ignore[arg-type]  # routes are listed, never called
    app.include_router(metrics_router(SpecOnly(), ReplicaMetrics(), cache))  # type: ignore[arg-type]
    mount_dashboard(app, SpecOnly(), {}, cache)  # type: ignore[arg-type]
    routes = {(method, route.path) for route in api_routes(app.routes) for method in route.methods}
    assert routes == set(POLICY)


async def test_no_tokens_on_loopback_is_the_open_demo(tmp_path: Path) -> None:
    async with await open_log(tmp_path / "log.db", "s1/t1") as log:
        no_tokens = Access(TokenStore(tmp_path / "none.json"), loopback_only=True)
        app = create_app(FakeReplica("s1/t1", log), access=no_tokens)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://till") as client:
            assert (await client.get("/status")).status_code == 200


async def test_a_replica_on_the_network_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    init_site(tmp_path, {"s1": ["t1"]}, hosts={"s1/t1": "192.0.2.10"})  # TEST-NET: no traffic
    site = load_site(tmp_path)
    replica = Replica(site, "s1/t1", tmp_path, fresh=True)
    with pytest.raises(ApiUnprotected, match="no API token issued"):
        await replica.start()
    assert not (site.data_dir(tmp_path, "s1/t1") / "log.db").exists()  # nothing touched


def test_the_token_cli_issues_lists_and_revokes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_site(tmp_path, {"s1": ["t1"]})
    base = ["token", "--data", str(tmp_path), "--replica", "s1/t1"]
    issue = ["token", "issue", *base[1:], "--role", "cashier", "--name", "till page t1"]
    assert main(issue) == 0
    token = capsys.readouterr().out.splitlines()[0]
    assert token.startswith("tm_")
    assert main(["token", "list", *base[1:], "--json"]) == 0
    listed = capsys.readouterr().out
    secret = token.split("_", 2)[2]  # token_urlsafe may itself hold "_"
    assert "till page t1" in listed and secret not in listed  # never the secret
    token_id = token.split("_")[1]
    assert main(["token", "revoke", *base[1:], token_id]) == 0
    assert TokenStore(site_tokens := tmp_path / "s1" / "t1" / "api-tokens.json").records() == []
    assert oct(site_tokens.stat().st_mode & 0o777) == "0o600"


async def test_a_discount_beyond_the_cashiers_limit_is_a_managers_decision(
    api: Api, log: EventLog
) -> None:
    def sale(discount: int, receipt: str) -> dict[str, Any]:
        line = {"sku": "COLA", "qty": 2, "discount": discount}  # 2 x 150: the limit is 30
        paid = [{"method": "cash", "amount": 300 - discount}]
        return {"lines": [line], "payments": paid, "receipt": receipt}

    assert (await api.call("cashier", "POST", "/sales", sale(30, "D-1"))).status_code == 201
    over = await api.call("cashier", "POST", "/sales", sale(31, "D-2"))
    assert over.status_code == 403 and "discount over 10% of the line" in over.text
    approved = await api.call("manager", "POST", "/sales", sale(31, "D-2"))
    assert approved.status_code == 201
    body = await event_body(log, approved.json()["sale_id"])
    assert isinstance(body, SaleCompleted) and body.approved_by.startswith("manager device")


async def test_a_cashier_voids_only_this_tills_recent_sales(api: Api, log: EventLog) -> None:
    mine = (await api.call("cashier", "POST", "/sales", SALE)).json()["sale_id"]
    assert (await api.call("cashier", "POST", f"/sales/{mine}/void", {})).status_code == 201
    other = chain("s1/t2", [cash_sale(sku="COLA", price=150, receipt="T2-1")])
    await log.ingest(other)  # a sale another till of the store made
    r = await api.call("cashier", "POST", f"/sales/{other[0].id}/void", {})
    assert r.status_code == 403 and "only this till's sales" in r.text
    assert (await api.call("manager", "POST", f"/sales/{other[0].id}/void", {})).status_code == 201


async def test_at_hq_a_price_is_the_chains_and_needs_hq_admin(tmp_path: Path) -> None:
    async with await open_log(tmp_path / "hq.db", "hq") as log:
        await log.append(ProductUpserted(sku="COLA", name="Cola", price=150))
        store = TokenStore(tmp_path / "api-tokens.json")
        manager, admin = store.issue("store m", "manager"), store.issue("catalog", "hq_admin")
        app = create_app(FakeReplica("hq", log), access=Access(store, loopback_only=True))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hq") as client:
            for token, status in ((manager, 403), (admin, 200)):
                r = await client.put("/catalog/COLA/price", json={"price": 99},
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
                assert r.status_code == status, r.text


def test_a_token_name_follows_the_event_text_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It may end up in a sale (approved_by): a name the event rules refuse would make
    every override by that manager fail."""
    init_site(tmp_path, {"s1": ["t1"]})
    for name in ("x" * 81, "ann\x1b[31m", "card 4111 1111 1111 1111"):
        with pytest.raises(SystemExit) as info:
            main(["token", "issue", "--data", str(tmp_path), "--replica", "s1/t1",
                  "--role", "manager", "--name", name])  # fmt: skip
        assert info.value.code == 2
        assert "4111" not in capsys.readouterr().err
