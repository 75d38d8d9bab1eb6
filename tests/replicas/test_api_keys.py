"""`POST /keys/{replica}/revoke`: HQ's catalog team revokes a stolen till; what it writes
afterwards is kept and replicated, never state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conflict.state import StoreState
from core.log import EventLog
from core.signing import Ed25519Signer, new_signing_seed
from replicas.api.tokens import Role, TokenStore
from tests.factories import cash_sale, chain
from tests.replicas.api_kit import Api, token_api


async def _api(tmp_path: Path, replica_id: str) -> AsyncIterator[tuple[Api, EventLog]]:
    log = await EventLog.open(  # signed, as on a site with signing keys: a till rotates
        tmp_path / f"{replica_id.replace('/', '-')}.db", replica_id, StoreState(),
        signer=Ed25519Signer(new_signing_seed()),
    )  # fmt: skip
    store = TokenStore(tmp_path / f"{replica_id.replace('/', '-')}-tokens.json")
    tokens = {role.name: store.issue(f"{role.name} device", role.name) for role in Role}
    try:
        async with token_api(log, store, tokens, replica_id) as api:
            yield api, log
    finally:
        await log.close()


@pytest.fixture
async def hq(tmp_path: Path) -> AsyncIterator[tuple[Api, EventLog]]:
    async for pair in _api(tmp_path, "hq"):
        yield pair


async def test_hq_admin_revokes_and_later_sales_are_not_state(
    hq: tuple[Api, EventLog],
) -> None:
    api, log = hq
    revoke = {"after_seq": 2, "reason": "till stolen from store 1"}
    assert (await api.call("manager", "POST", "/keys/s1/t2/revoke", revoke)).status_code == 403
    r = await api.call("hq_admin", "POST", "/keys/s1/t2/revoke", revoke)
    assert r.status_code == 201, r.text
    assert r.json()["event_id"] == "hq:1"
    await log.ingest(chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(5)]), "s1/t2")
    sales = await log.read(lambda c: c.execute("SELECT count(*) FROM st_sales").fetchone()[0])
    assert sales == 2 and log.version_vector()["s1/t2"] == 5  # kept, not state


@pytest.mark.parametrize(
    ("path", "says"),
    [("/keys/hq/revoke", "HQ cannot revoke itself"), ("/keys/s1/t 2/revoke", "replica id")],
)
async def test_a_bad_replica_is_refused(hq: tuple[Api, EventLog], path: str, says: str) -> None:
    r = await hq[0].call("hq_admin", "POST", path, {"after_seq": 0})
    assert r.status_code == 422 and says in r.text


async def test_a_till_revokes_no_one(tmp_path: Path) -> None:
    async for till, _ in _api(tmp_path, "s1/t1"):
        r = await till.call("hq_admin", "POST", "/keys/s1/t2/revoke", {"after_seq": 0})
        assert r.status_code == 403 and "at HQ" in r.text


@pytest.fixture
async def till(tmp_path: Path) -> AsyncIterator[tuple[Api, EventLog]]:
    async for pair in _api(tmp_path, "s1/t2"):
        yield pair


async def test_a_till_rotates_its_key_and_hq_vouches_for_it(
    hq: tuple[Api, EventLog], till: tuple[Api, EventLog]
) -> None:
    hq_api, _ = hq
    till_api, till_log = till
    await till_log.append(cash_sale())
    assert (await till_api.call("cashier", "POST", "/keys/rotate")).status_code == 403
    r = await till_api.call("manager", "POST", "/keys/rotate")
    assert r.status_code == 201, r.text
    rotated = r.json()
    assert rotated["replica"] == "s1/t2" and rotated["from_seq"] == 2
    assert len((await till_log.append(cash_sale(receipt="R2"))).sig) == 64 + 6  # names it

    vouch = {"public_key": rotated["public_key"], "from_seq": rotated["from_seq"]}
    assert (await hq_api.call("hq_admin", "POST", "/keys/rotate")).status_code == 422
    assert (await till_api.call("hq_admin", "POST", "/keys/s1/t2/rotate", vouch)).status_code == 403
    assert (await hq_api.call("manager", "POST", "/keys/s1/t2/rotate", vouch)).status_code == 403
    assert (await hq_api.call("hq_admin", "POST", "/keys/hq/rotate", vouch)).status_code == 422
    bad = {**vouch, "public_key": "not-a-key"}
    assert (await hq_api.call("hq_admin", "POST", "/keys/s1/t2/rotate", bad)).status_code == 422
    r = await hq_api.call("hq_admin", "POST", "/keys/s1/t2/rotate", vouch)
    assert r.status_code == 201, r.text
    assert r.json()["event_id"] == "hq:1"


async def test_a_till_of_a_site_without_signing_keys_is_told_how_to_get_them(
    tmp_path: Path,
) -> None:
    log = await EventLog.open(tmp_path / "t.db", "s1/t1", StoreState())  # no signer
    store = TokenStore(tmp_path / "tokens.json")
    tokens = {"manager": store.issue("manager device", "manager")}
    try:
        async with token_api(log, store, tokens, "s1/t1") as api:
            r = await api.call("manager", "POST", "/keys/rotate")
    finally:
        await log.close()
    assert r.status_code == 409 and "site keys --add" in r.text
