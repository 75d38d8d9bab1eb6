"""Who made a write: a person's token writes as that person only, a device's token says
who, and the event records it (issue 15).

Against the real app over a real log, with tokens issued: person-bound tokens of
cashiers C042 and C017 and of manager M007, a till front end's token and a store
tablet's (devices). Each event is read back from the log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from core.events import (
    Body,
    ProductUpserted,
    SaleCompleted,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
)
from core.log import EventLog
from replicas.api.tokens import TokenStore
from replicas.cli.main import main
from replicas.site import init_site
from tests.replicas.api_kit import (
    TILL,
    Api,
    FakeReplica,
    client_for,
    event_body,
    open_log,
    token_api,
)

SALE = {"lines": [{"sku": "COLA", "qty": 1}], "payments": [{"method": "cash", "amount": 150}]}
# 150 is the catalog price: at 100 the sale is a manager's decision.
OVERRIDE = {
    "lines": [{"sku": "COLA", "qty": 1, "unit_price": 100}],
    "payments": [{"method": "cash", "amount": 100}],
    "approval_reason": "dented can",
}


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "log.db", "s1/t1")
    await log.append(ProductUpserted(sku="COLA", name="Cola", price=150))
    yield log
    await log.close()


@pytest.fixture
async def api(tmp_path: Path, log: EventLog) -> AsyncIterator[Api]:
    store = TokenStore(tmp_path / "api-tokens.json")
    tokens = {
        "C042": store.issue("Ann", "cashier", person="C042"),
        "C017": store.issue("Bo", "cashier", person="C017"),
        "M007": store.issue("Mia's badge", "manager", person="M007"),
        "front": store.issue("till front end", "cashier"),
        "tablet": store.issue("store tablet", "manager"),
    }
    async with token_api(log, store, tokens) as api:
        yield api


async def _sell(api: Api, log: EventLog, who: str, **extra: Any) -> SaleCompleted:
    r = await api.call(who, "POST", "/sales", {**SALE, **extra})
    assert r.status_code == 201, r.text
    body = await event_body(log, r.json()["sale_id"])
    assert isinstance(body, SaleCompleted)
    return body


def _by(body: Body) -> str:
    """Who made an event (schema 3), '' if it names no one."""
    return str(msgspec.to_builtins(body).get("by", ""))


async def test_a_persons_token_sells_as_that_person_only(api: Api, log: EventLog) -> None:
    r = await api.call("C042", "POST", "/sales", {**SALE, "cashier": "C017"})
    assert r.status_code == 403
    assert r.json()["detail"] == "this token is C042's; it cannot sell as C017"
    assert (await _sell(api, log, "C042")).cashier == "C042"  # left out: filled in
    assert (await _sell(api, log, "C042", cashier="C042")).cashier == "C042"


async def test_a_retried_sale_of_a_persons_token_is_the_same_sale(api: Api) -> None:
    """The retry is compared with the stored sale, whose cashier was filled in."""
    first = await api.call("C042", "POST", "/sales", {**SALE, "receipt": "PAPER-1"})
    again = await api.call("C042", "POST", "/sales", {**SALE, "receipt": "PAPER-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()


async def test_a_devices_token_records_the_cashier_it_states(api: Api, log: EventLog) -> None:
    assert (await _sell(api, log, "front", cashier="C017")).cashier == "C017"
    assert (await _sell(api, log, "front")).cashier == ""  # it named no one: as before


async def test_an_approval_names_the_credential_that_gave_it(api: Api, log: EventLog) -> None:
    mine = await _sell(api, log, "M007", **OVERRIDE)
    m007, tablet = api.record("M007"), api.record("tablet")
    assert (mine.cashier, mine.approved_by) == ("M007", f"M007 (token {m007.id})")
    # A manager's own token approves a cashier's sale: the sale names both.
    theirs = await _sell(api, log, "M007", **OVERRIDE, cashier="C042", receipt="PAPER-2")
    assert (theirs.cashier, theirs.approved_by) == ("C042", f"M007 (token {m007.id})")
    assert theirs.approval_reason == "dented can"
    # ...and nothing else in their name.
    r = await api.call("M007", "POST", "/sales", {**SALE, "cashier": "C042"})
    assert r.status_code == 403 and "sells as C042 only to approve a price" in r.text
    by_device = await _sell(api, log, "tablet", **OVERRIDE, cashier="C017", receipt="PAPER-3")
    assert by_device.cashier == "C017"
    assert by_device.approved_by == f"store tablet (token {tablet.id})"


async def test_every_write_names_who_made_it(api: Api, log: EventLog) -> None:
    """Events that named no one before schema 3 name the person, else the credential."""
    sale = (await api.call("front", "POST", "/sales", {**SALE, "cashier": "C042"})).json()
    tablet = api.record("tablet")
    writes = [  # (who, method, url, body, the event's `by`)
        ("C042", "POST", f"/sales/{sale['sale_id']}/void", None, "C042"),
        ("C042", "POST", "/stock/COLA/receive", {"qty": 5}, "C042"),
        ("front", "POST", "/stock/COLA/receive", {"qty": 5, "by": "C017"}, "C017"),
        ("front", "POST", "/stock/COLA/receive", {"qty": 5}, f"till front end (token"
                                                             f" {api.record('front').id})"),
        ("M007", "POST", "/stock/COLA/adjust", {"delta": -1, "reason": "broken"}, "M007"),
        ("M007", "POST", "/stock/COLA/count", {"count": 7}, "M007"),
        ("tablet", "POST", "/stock/COLA/count", {"count": 7}, f"store tablet (token {tablet.id})"),
        ("M007", "PUT", "/catalog/COLA/price", {"price": 160, "by": "M007"}, "M007"),
    ]  # fmt: skip
    for who, method, url, body, by in writes:
        r = await api.call(who, method, url, body)
        assert r.status_code in (200, 201), r.text
        made = await event_body(log, r.json()["event_id"])
        assert _by(made) == by, (url, made)


async def test_a_refund_and_a_shift_name_who_made_them(api: Api, log: EventLog) -> None:
    opened = await api.call("C042", "POST", "/shifts", {"shift": "S1", "float_amount": 100})
    assert opened.status_code == 201 and opened.json()["cashier"] == "C042"
    sale = (await api.call("C042", "POST", "/sales", {**SALE, "shift": "S1"})).json()
    r = await api.call("M007", "POST", f"/sales/{sale['sale_id']}/refunds",
                       {"lines": [{"line": 0, "qty": 1}]})  # fmt: skip
    assert r.status_code == 201, r.text
    assert _by(await event_body(log, r.json()["refund_id"])) == "M007"
    closed = await api.call("M007", "POST", "/shifts/S1/close", {"counted_cash": 100})
    assert closed.status_code == 200, closed.text
    last = log.version_vector()["s1/t1"]
    bodies = [await event_body(log, f"s1/t1:{seq}") for seq in range(1, last + 1)]
    assert [b.cashier for b in bodies if isinstance(b, ShiftOpened)] == ["C042"]
    assert [_by(b) for b in bodies if isinstance(b, ShiftClosed)] == ["M007"]


@pytest.mark.parametrize(
    ("method", "url", "body", "doing"),
    [
        ("POST", "/sales/s1/t1:1/void", {"by": "C017"}, "void"),
        ("POST", "/stock/COLA/receive", {"qty": 1, "by": "C017"}, "take a delivery"),
        ("POST", "/shifts", {"float_amount": 0, "cashier": "C017"}, "open a shift"),
    ],
)
async def test_a_persons_token_acts_as_no_one_else(
    api: Api, method: str, url: str, body: Any, doing: str
) -> None:
    r = await api.call("C042", method, url, body)
    assert r.status_code == 403
    assert r.json()["detail"] == f"this token is C042's; it cannot {doing} as C017"


async def test_a_manager_decides_a_conflict_as_themselves(api: Api) -> None:
    """The name is checked before the conflict is looked up: 403, not 404."""
    r = await api.call("M007", "POST", "/conflicts/nope/resolve", {"action": "accept", "by": "M1"})
    assert r.status_code == 403 and "it cannot resolve conflicts as M1" in r.text
    r = await api.call("M007", "POST", "/conflicts/nope/resolve", {"action": "accept"})
    assert r.status_code == 404


async def test_on_the_open_demo_a_resolution_still_names_who_decides(tmp_path: Path) -> None:
    async with await open_log(tmp_path / "log.db") as log, client_for(FakeReplica(TILL, log)) as c:
        r = await c.post("/conflicts/nope/resolve", json={"action": "accept"})
        assert r.status_code == 422 and "say who decides" in r.text


async def test_a_cashier_voids_only_their_own_sales(api: Api) -> None:
    sale = (await api.call("front", "POST", "/sales", {**SALE, "cashier": "C042"})).json()
    url = f"/sales/{sale['sale_id']}/void"
    r = await api.call("C017", "POST", url, {})
    assert r.status_code == 403 and "a cashier voids only their own sales" in r.text
    assert (await api.call("C042", "POST", url, {})).status_code == 201


async def test_a_void_by_a_device_names_the_device(api: Api, log: EventLog) -> None:
    sale = (await api.call("front", "POST", "/sales", SALE)).json()
    r = await api.call("front", "POST", f"/sales/{sale['sale_id']}/void")
    void = await event_body(log, r.json()["event_id"])
    assert isinstance(void, SaleVoided)
    assert void.by == f"till front end (token {api.record('front').id})"


def test_a_token_file_from_before_persons_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "api-tokens.json"
    old = {"id": "3f9a2c1b", "name": "till page", "role": "cashier", "sha256": "0" * 64,
           "issued_at": "2024-05-01T09:00:00+00:00"}  # fmt: skip
    path.write_text(json.dumps({"tokens": [old]}))
    (record,) = TokenStore(path).records()
    assert record.person == "" and record.label == "till page (token 3f9a2c1b)"


def test_the_token_cli_binds_a_token_to_a_person(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init_site(tmp_path, {"s1": ["t1"]})
    base = ["--data", str(tmp_path), "--replica", "s1/t1"]
    assert main(["token", "issue", *base, "--role", "cashier", "--name", "Ann",
                 "--person", "C042"]) == 0  # fmt: skip
    assert "cashier token for s1/t1 (Ann, C042's)" in capsys.readouterr().out
    assert main(["token", "list", *base, "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert (listed["name"], listed["person"]) == ("Ann", "C042")
    assert main(["token", "list", *base]) == 0
    assert "person C042" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("person", "why"),
    [
        ("card 4111 1111 1111 1111", "may hold no card number and no control character"),
        ("C042\x1b[2J", "may hold no card number and no control character"),
        (" C042", "has no blanks at either end"),
        ("", "is 1-80 characters"),
    ],
)
def test_the_token_cli_refuses_a_person_id_no_event_may_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], person: str, why: str
) -> None:
    init_site(tmp_path, {"s1": ["t1"]})
    with pytest.raises(SystemExit) as info:
        main(["token", "issue", "--data", str(tmp_path), "--replica", "s1/t1",
              "--role", "cashier", "--name", "Ann", "--person", person])  # fmt: skip
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"--person: a person's id {why}" in err, err
    assert "4111" not in err and "\x1b" not in err
    assert TokenStore(tmp_path / "s1" / "t1" / "api-tokens.json").records() == []
