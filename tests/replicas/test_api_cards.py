"""Card payments at the till API against the acquirer as a real process (issue 17):
the till, not the client, decides online or deferred; a decline refuses the sale;
offline, only under the floor limits HQ set; beyond them, a manager's recorded word."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from broker.config import free_port
from core.events import (
    CardCaptured,
    CardLimitsSet,
    Payment,
    ProductUpserted,
    SaleCompleted,
    decode_body,
    decode_event,
)
from core.log import EventLog
from replicas.api.app import create_app
from replicas.api.auth import Access
from replicas.api.cards import auth_key
from replicas.api.tokens import TokenStore
from replicas.cache import StateCache
from replicas.errors import ProcessorRefused
from replicas.metrics import take_snapshot
from replicas.payments import asking
from replicas.payments.adapter import CardAsk, HttpAcquirer
from replicas.payments.forwarder import Forwarder
from replicas.payments.reversals import PendingReversals, give_back
from tests.acquirer_kit import AcquirerProc
from tests.e2e.harness import wait_until
from tests.replicas.api_kit import TILL, FakeReplica, event_body, from_hq, open_log


def card(amount: int, token: str = "tok_visa_0001", **extra: Any) -> dict[str, Any]:
    return {"method": "card", "amount": amount, "card_token": token, "card_last4": "4242",
            "reference": "T1-0001", **extra}  # fmt: skip


def sale(amount: int, **pay: Any) -> dict[str, Any]:
    return {"lines": [{"sku": "MISC", "qty": 1, "unit_price": amount}],
            "payments": [card(amount, **pay)]}  # fmt: skip


class Till:
    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, str], replica: FakeReplica):
        self.client, self.tokens, self.replica = client, tokens, replica

    async def post(self, body: dict[str, Any], who: str = "cashier") -> httpx.Response:
        auth = {"Authorization": f"Bearer {self.tokens[who]}"}
        return await self.client.post("/sales", json=body, headers=auth)


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[EventLog]:
    log = await open_log(tmp_path / "log.db", TILL)
    await from_hq(log, ProductUpserted(sku="COLA", name="Cola", price=150))
    yield log
    await log.close()


@pytest.fixture
async def till(tmp_path: Path, log: EventLog, acquirer: AcquirerProc) -> AsyncIterator[Till]:
    store = TokenStore(tmp_path / "api-tokens.json")
    tokens = {"cashier": store.issue("front end", "cashier"),
              "manager": store.issue("Mia's badge", "manager", person="M007")}  # fmt: skip
    processor = acquirer.client(timeout_s=1.0)
    owed = PendingReversals(tmp_path / "card-reversals.db")
    replica = FakeReplica(TILL, log, processor=processor, reversals=owed)
    app = create_app(replica, access=Access(store, loopback_only=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield Till(c, tokens, replica)
    await processor.aclose()


async def _stored(log: EventLog, r: httpx.Response) -> SaleCompleted:
    assert r.status_code == 201, r.text
    body = await event_body(log, r.json()["sale_id"])
    assert isinstance(body, SaleCompleted)
    return body


async def test_online_approval_is_part_of_the_sale(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    r = await till.post(sale(1250, auth="deferred"))  # what the client says is not read
    (pay,) = (await _stored(log, r)).payments
    (record,) = await acquirer.records()
    assert (pay.auth, pay.approval) == ("online", record["reference"])
    assert r.json()["payments"][0]["approval"] == record["reference"]
    assert (record["kind"], record["amount"], record["last4"]) == ("authorise", 1250, "4242")


async def test_an_online_decline_refuses_the_sale(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    r = await till.post(sale(900, token="tok_decline_01"))
    assert r.status_code == 402 and "declined by the processor (do not honour)" in r.text
    assert log.head(TILL)[0] == 0  # nothing stored
    assert [x["status"] for x in await acquirer.records()] == ["declined"]


async def test_a_retry_after_a_decline_is_a_new_authorisation_never_offline(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    # The page retries with the same receipt after a 402: another card, a changed basket.
    declined = await till.post({**sale(900, token="tok_decline_01"), "receipt": "R-77"})
    assert declined.status_code == 402, declined.text
    (pay,) = (await _stored(log, await till.post({**sale(950), "receipt": "R-77"}))).payments
    assert pay.auth == "online" and pay.approval
    records = await acquirer.records()
    assert sorted(r["status"] for r in records) == ["approved", "declined"]
    assert len({r["key"] for r in records}) == 2


async def test_a_request_the_processor_refuses_is_refused_not_taken_offline(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    # The key this sale will use, already taken at the acquirer for another amount: 409.
    body = {**sale(600), "receipt": "R-88"}
    paid = Payment(method="card", amount=600, card_token="tok_visa_0001", card_last4="4242")
    key = auth_key(TILL, "R-88", 0, paid, [paid])
    http = acquirer.client()
    try:
        await http.authorise(CardAsk(key=key, token="tok_visa_0001", last4="4242", amount=1))
    finally:
        await http.aclose()
    r = await till.post(body)
    assert r.status_code == 502 and "refused the request (HTTP 409" in r.text, r.text
    assert log.head(TILL)[0] == 0  # nothing stored, nothing deferred


async def test_the_longest_receipt_and_reference_the_api_takes_go_online(
    till: Till, log: EventLog
) -> None:
    body = {**sale(500, reference="T" * 200), "receipt": "R" * 80}
    (pay,) = (await _stored(log, await till.post(body))).payments
    assert pay.auth == "online"


async def test_cut_off_from_the_processor_under_limits_deferred_above_refused(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    acquirer.kill(signal.SIGKILL)
    await from_hq(log, CardLimitsSet(per_payment=5_000, till_total=8_000, till_count=3,
                                     max_age_s=3600, store="s1"))  # fmt: skip
    # A client claiming "online" with no processor reachable is stored deferred.
    (pay,) = (await _stored(log, await till.post(sale(4_000, auth="online")))).payments
    assert (pay.auth, pay.approval, pay.override_by) == ("deferred", "", "")
    # The issue's probe: 145,900.00 offline is refused, saying which limit and what to do.
    big = await till.post(sale(14_590_000))
    assert big.status_code == 409, big.text
    assert "145,900.00 is over the offline floor limit of 50.00" in big.text
    assert "take another method" in big.text
    # Per till: 4,000 held, 4,500 more is over 8,000.
    total = await till.post(sale(4_500))
    assert total.status_code == 409 and "over its limit of 80.00" in total.text
    assert log.head(TILL)[0] == 1


async def test_a_manager_takes_a_card_offline_beyond_the_limits_on_record(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    await acquirer.set_mode("outage")
    r = await till.post(sale(30_000, override=True))  # default limit per payment: 250.00
    assert r.status_code == 403 and "needs the manager role" in r.text
    (pay,) = (await _stored(log, await till.post(sale(30_000, override=True), "manager"))).payments
    assert (pay.auth, pay.override_by) == ("deferred", "M007")
    assert await acquirer.records() == []  # an outage: nothing was authorised


async def test_a_slow_processor_is_no_answer_and_the_card_it_approved_is_charged_once(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """The till gives up on the authorisation (1 s) and takes the card offline; the
    acquirer approves it after 5 s. The capture names that authorisation (`attempt`),
    so it gets the approval made then: one charge, not two."""
    r = await till.post({**sale(700, token="tok_slow_0001"), "receipt": "R-SLOW"})
    stored = await _stored(log, r)
    (pay,) = stored.payments
    assert pay.auth == "deferred" and pay.attempt == auth_key(TILL, "R-SLOW", 0, pay, [pay])

    async def approved_there() -> bool:
        return [r["status"] for r in await acquirer.records()] == ["approved"]

    await wait_until(approved_there, "the acquirer's late approval", 15)
    (auth,) = await acquirer.records()
    processor = acquirer.client(timeout_s=15)  # this token is slow there too
    try:
        assert await Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5).round()
    finally:
        await processor.aclose()
    records = {r["kind"]: r for r in await acquirer.records()}
    assert records["capture"]["attempt"] == auth["key"] == pay.attempt
    assert records["capture"]["reference"] == auth["reference"]  # the same charge
    captured = [b for b in await _bodies(log) if isinstance(b, CardCaptured)]
    assert [c.reference for c in captured] == [auth["reference"]]


async def test_a_capture_naming_an_authorisation_the_processor_never_saw_is_a_new_one(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    await acquirer.set_mode("outage")  # a 503: no answer, and nothing decided there
    (pay,) = (await _stored(log, await till.post(sale(800)))).payments
    assert pay.auth == "deferred" and pay.attempt
    await acquirer.set_mode("up")
    processor = acquirer.client()
    try:
        assert await Forwarder(log, "s1", lambda: processor, log.wall_ms, every_s=0.5).round()
    finally:
        await processor.aclose()
    (capture,) = await acquirer.records()
    assert (capture["kind"], capture["status"], capture["attempt"]) == (
        "capture", "approved", pay.attempt,
    )  # fmt: skip


async def _bodies(log: EventLog) -> list[object]:
    raws = await log.read_range(TILL, 1, 1000)
    return [decode_body(decode_event(raw)) for raw in raws]


def two_cards(first: str, second: str, each: int = 500) -> dict[str, Any]:
    return {"lines": [{"sku": "MISC", "qty": 1, "unit_price": 2 * each}],
            "payments": [card(each, token=first), card(each, token=second)]}  # fmt: skip


async def test_a_second_card_declined_reverses_the_first_and_a_retry_charges_once(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """The first card approved, the second declined: the sale is refused and the first
    card's authorisation reversed (no charge without a sale). The page's retry with
    another second card asks anew for both, and only the stored sale's cards are
    charged."""
    r = await till.post({**two_cards("tok_visa_0001", "tok_decline_02"), "receipt": "R-2C"})
    assert r.status_code == 402, r.text
    assert log.head(TILL)[0] == 0
    first, second = sorted(await acquirer.records(), key=lambda x: x["reference"])
    assert (first["status"], first["reversed"]) == ("approved", 1)  # given back
    assert (second["status"], second["reversed"]) == ("declined", 0)
    retry = await till.post({**two_cards("tok_visa_0001", "tok_visa_0003"), "receipt": "R-2C"})
    payments = (await _stored(log, retry)).payments
    assert [p.auth for p in payments] == ["online", "online"]
    charged = [
        x for x in await acquirer.records() if x["status"] == "approved" and not x["reversed"]
    ]
    assert sorted(x["reference"] for x in charged) == sorted(p.approval for p in payments)


async def test_a_card_beyond_the_limits_reverses_the_others_and_a_late_approval_is_refused(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """The second card gets no answer in time (the acquirer answers it after 5 s) and is
    over the offline limit, with no manager: 409. Both authorisations are reversed: the
    first's approval, and the second's key, so its late authorisation is refused there."""
    await from_hq(log, CardLimitsSet(per_payment=100, till_total=8_000, till_count=3,
                                     max_age_s=3600, store="s1"))  # fmt: skip
    r = await till.post({**two_cards("tok_visa_0001", "tok_slow_0002"), "receipt": "R-LIM"})
    assert r.status_code == 409 and "over the offline floor limit" in r.text, r.text
    assert log.head(TILL)[0] == 0  # no sale

    async def all_given_back() -> bool:
        records = await acquirer.records()
        return len(records) == 2 and all(x["reversed"] for x in records)

    await wait_until(all_given_back, "both authorisations reversed", 15)
    kinds = sorted((x["kind"], x["status"]) for x in await acquirer.records())
    assert kinds == [("authorise", "approved"), ("reverse", "reversed")]
    # The second authorisation, still on its way there: refused when it arrives.
    paid = [Payment(method="card", amount=500, card_token=t, card_last4="4242")
            for t in ("tok_visa_0001", "tok_slow_0002")]  # fmt: skip
    late = CardAsk(key=auth_key(TILL, "R-LIM", 1, paid[1], paid), token="tok_visa_0009",
                   last4="4242", amount=500)  # fmt: skip
    http = acquirer.client()
    try:
        with pytest.raises(ProcessorRefused, match="was reversed"):
            await http.authorise(late)
    finally:
        await http.aclose()


async def test_a_reversal_that_gets_no_answer_is_owed_and_sent_by_the_forwarder(
    tmp_path: Path, log: EventLog, acquirer: AcquirerProc
) -> None:
    processor = acquirer.client()
    nowhere = HttpAcquirer(f"http://127.0.0.1:{free_port()}", timeout_s=1.0)
    owed = PendingReversals(tmp_path / "card-reversals.db")
    try:
        ask = CardAsk(key="s1/t1|a|given-up", token="tok_visa_0001", last4="4242", amount=300)
        assert (await processor.authorise(ask)).approved
        await give_back(nowhere, owed, [ask.key])
        assert await PendingReversals(tmp_path / "card-reversals.db").keys() == [ask.key]
        till = FakeReplica(TILL, log, reversals=owed)
        assert (await take_snapshot(till, StateCache(log))).reversals_owed == 1  # ops see it
        forwarder = Forwarder(log, "s1", lambda: processor, log.wall_ms, reversals=owed)
        await forwarder.round()
        assert await owed.keys() == []
        assert (await take_snapshot(till, StateCache(log))).reversals_owed == 0
        (record,) = await acquirer.records()
        assert (record["status"], record["reversed"]) == ("approved", 1)
    finally:
        await processor.aclose()
        await nowhere.aclose()


async def test_a_refused_sale_retried_with_the_same_cards_never_reuses_a_reversed_key(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """The second card gets no answer and is over the offline limit: 409, and both keys
    are given back. The manager's retry of the very same sale (receipt and cards) asks
    anew under keys never given back: the first card's earlier approval stays reversed
    and a new one is what the stored sale carries. Reusing the old key would have the
    processor refuse it as reversed, or, while the reversal is still owed, answer it
    approved and then undo that approval under a stored sale."""
    await from_hq(log, CardLimitsSet(per_payment=100, till_total=8_000, till_count=3,
                                     max_age_s=3600, store="s1"))  # fmt: skip
    body = {**two_cards("tok_visa_0001", "tok_slow_0002"), "receipt": "R-AGAIN"}
    assert (await till.post(body)).status_code == 409
    body["payments"][1]["override"] = True
    stored = await _stored(log, await till.post(body, "manager"))
    first, second = stored.payments
    assert (first.auth, second.auth, second.override_by) == ("online", "deferred", "M007")
    records = await acquirer.records()
    approvals = [x for x in records if x["kind"] == "authorise" and x["last4"] == "4242"
                 and x["amount"] == 500 and x["status"] == "approved"]  # fmt: skip
    reversed_ = [x["reference"] for x in approvals if x["reversed"]]
    kept = [x["reference"] for x in approvals if not x["reversed"]]
    assert first.approval in kept and first.approval not in reversed_ and reversed_


async def test_an_owed_reversal_never_reverses_the_stored_retry_of_its_sale(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """Processor down: the card is deferred, over the limit, no override: 409, and its
    key is owed a reversal. The manager retries the same receipt with an override once
    the processor is back: it is approved under a new key and stored; the forwarder's
    round then sends the owed reversal of the old key, never the stored sale's (found
    in review: the same key was asked again, approved, then reversed)."""
    await from_hq(log, CardLimitsSet(per_payment=100, till_total=8_000, till_count=3,
                                     max_age_s=3600, store="s1"))  # fmt: skip
    await acquirer.set_mode("outage")
    assert (await till.post({**sale(500), "receipt": "R-OWE"})).status_code == 409
    owed = till.replica.reversals
    assert owed is not None and len(await owed.keys()) == 1
    await acquirer.set_mode("up")
    retry = await till.post({**sale(500, override=True), "receipt": "R-OWE"}, "manager")
    (pay,) = (await _stored(log, retry)).payments
    assert pay.auth == "online"
    processor = acquirer.client()
    try:
        await Forwarder(log, "s1", lambda: processor, log.wall_ms, reversals=owed).round()
    finally:
        await processor.aclose()
    assert await owed.keys() == []
    (record,) = [r for r in await acquirer.records() if r["reference"] == pay.approval]
    assert record["reversed"] == 0, "the stored sale's approval was reversed"


async def test_a_sale_cancelled_while_its_card_is_asked_reverses_that_authorisation(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """The request is cancelled (a shutdown's grace ends) while the acquirer decides:
    no sale is stored, and the authorisation it approves after is reversed (a tombstone
    there first: its approval is refused). Found in review."""
    task = asyncio.create_task(till.post({**sale(700, token="tok_slow_0001"), "receipt": "R-C"}))
    # Cancelled before or after its request left, the sale gives its key back: 0.3 s
    # picks "after" (the acquirer holds a slow token's authorisation for 5 s).
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert log.head(TILL)[0] == 0  # no sale

    async def given_back() -> bool:
        return any(r["reversed"] for r in await acquirer.records())

    await wait_until(given_back, "the in-flight authorisation reversed", 15)
    paid = Payment(method="card", amount=700, card_token="tok_slow_0001", card_last4="4242")
    late = CardAsk(key=auth_key(TILL, "R-C", 0, paid, [paid]), token="tok_visa_0001",
                   last4="4242", amount=700)  # fmt: skip
    http = acquirer.client()
    try:
        with pytest.raises(ProcessorRefused, match="was reversed"):
            await http.authorise(late)  # as the slow one will be when it lands
    finally:
        await http.aclose()


async def test_an_owed_reversal_stays_owed_when_the_processor_refuses_the_till_401(
    tmp_path: Path, acquirer: AcquirerProc
) -> None:
    """The forwarder's retry is answered 401 (the till's API key is stale): that says
    nothing of the reversal, so it stays owed (found in review: it was dropped)."""
    owed = PendingReversals(tmp_path / "owed.db")
    processor = acquirer.client()
    stale = HttpAcquirer(acquirer.url, 3.0, "not-the-key")
    try:
        ask = CardAsk(key="s1/t1|a|owed", token="tok_visa_0001", last4="4242", amount=300)
        assert (await processor.authorise(ask)).approved
        await give_back(stale, owed, [ask.key])
        (record,) = await acquirer.records()
        assert record["reversed"] == 0
        assert await owed.keys() == [ask.key]
        await owed.retry(processor)
        assert await owed.keys() == []
        assert (await acquirer.records())[0]["reversed"] == 1
    finally:
        await processor.aclose()
        await stale.aclose()


async def test_an_approval_left_by_a_till_stopped_mid_sale_is_reversed(
    till: Till, log: EventLog, acquirer: AcquirerProc
) -> None:
    """What a till killed between the processor's approval and the sale's append leaves:
    the key noted as being asked, approved at the processor, no sale. The forwarder's
    round, its clock past the resolve delay, reverses it. A key whose sale is stored
    (noted again, as a kill right after the append leaves it) is left alone. The lost
    sale, asked again under its receipt, is a new authorisation."""
    owed, processor = till.replica.reversals, till.replica.processor
    assert owed is not None and processor is not None
    (kept,) = (await _stored(log, await till.post({**sale(700), "receipt": "R-KEPT"}))).payments
    assert kept.auth == "online" and kept.attempt  # approved under this key
    assert await owed.left_asking(2**62) == []  # stored: the note is gone
    await owed.asking(kept.attempt)  # as a kill right after the append leaves it
    lost = Payment(method="card", amount=800, card_token="tok_visa_0002", card_last4="4242")
    key = auth_key(TILL, "R-LOST", 0, lost, [lost])
    await owed.asking(key)  # noted, then asked; the till dies before its append
    ask = CardAsk(key=key, token="tok_visa_0002", last4="4242", amount=800)
    assert (await processor.authorise(ask)).approved
    later = int(time.time() * 1000) + (asking.RESOLVE_AFTER_S + 1) * 1000
    await Forwarder(log, "s1", lambda: processor, lambda: later, reversals=owed).round()
    approvals = {r["key"]: r for r in await acquirer.records() if r["kind"] == "authorise"}
    assert approvals[key]["reversed"] == 1 and approvals[kept.attempt]["reversed"] == 0
    assert await owed.left_asking(2**62) == [] and await owed.keys() == []
    retried = await till.post({**sale(800, token="tok_visa_0002"), "receipt": "R-LOST"})
    (again,) = (await _stored(log, retried)).payments
    assert again.auth == "online" and again.attempt not in (key, "")
