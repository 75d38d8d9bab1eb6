"""Card numbers never enter the log, however they are written and wherever they come
from: the API refuses them (422, never echoed) in every text field, SKUs included; an
event from the network carrying one is refused at ingest and not even kept as evidence;
a 404 never repeats one; text fields take no control characters. Afterwards no file
of the log (`log.db`, `-wal`) holds the digits in any form.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from core.errors import CardNumberInText
from core.events import SCHEMA_VERSION, Event, ProductUpserted, encode_event, event_hash
from core.log import EventLog
from core.pan import contains_card_number, safe_to_show
from tests.replicas.api_kit import FakeReplica, client_for, open_log

PAN = "4111111111111111"
VARIANTS = {
    "plain": PAN,
    "spaces": "4111 1111 1111 1111",
    "double spaces": "4111  1111  1111  1111",
    "dashes": "4111-1111-1111-1111",
    "dots": "4111.1111.1111.1111",
    "slashes": "4111/1111/1111/1111",
    "nbsp": "4111\u00a01111\u00a01111\u00a01111",
    "zero-width": "4111\u200b1111\u200b1111\u200b1111",
    "in words": "card no 4111 1111 1111 1111 thanks",
    "in a sku": "SKU-4111111111111111",
}


@pytest.mark.parametrize("text", VARIANTS.values(), ids=list(VARIANTS))
def test_every_separator_variant_is_a_card_number(text: str) -> None:
    assert contains_card_number(text)


@pytest.mark.parametrize(
    "text", ["s1-t1-000123", "PAPER-17", "4111 1111 111", "INV 2024 0001", "tel 0123 456 78"]
)
def test_ordinary_text_is_not(text: str) -> None:
    assert not contains_card_number(text)


def test_product_codes_and_numeric_receipts_are_never_taken_for_one() -> None:
    """Barcodes are SKUs (EAN-13, GTIN-14): a check over every stretch of a run refused
    one EAN-13 in four, and stores named by number generate receipts of 12+ digits."""
    codes = [f"{n:013d}" for n in range(4009266858000, 4009266859000)]  # EAN-13s
    receipts = [f"0042-03-{n:06d}" for n in range(0, 1000)]
    assert not [c for c in codes if contains_card_number(c, identifier=True)]
    assert not [r for r in receipts if contains_card_number(r, identifier=True)]
    assert contains_card_number("SKU-4111111111111111", identifier=True)  # a real PAN


def test_what_is_never_repeated_errs_on_the_safe_side() -> None:
    assert safe_to_show("sale 's1/t1:4111 1111 1111 1111'") != "sale 's1/t1:4111 1111 1111 1111'"
    assert safe_to_show("sale 's1/t1:42'") == "sale 's1/t1:42'"


@pytest.fixture
async def till(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, EventLog]]:
    log = await open_log(tmp_path / "log.db", "s1/t1")
    await log.append(ProductUpserted(sku="COLA", name="Cola", price=150))
    async with client_for(FakeReplica("s1/t1", log)) as client:
        yield client, log
    await log.close()


def _sale(**fields: Any) -> dict[str, Any]:
    line = {"sku": "COLA", "qty": 1, "unit_price": 150, **fields.pop("line", {})}
    return {"lines": [line], "payments": [{"method": "cash", "amount": 150}], **fields}


FIELDS = {
    "cashier": lambda v: ("/sales", _sale(cashier=v)),
    "receipt": lambda v: ("/sales", _sale(receipt=v)),
    "shift": lambda v: ("/sales", _sale(shift=v)),
    "sku": lambda v: ("/sales", _sale(line={"sku": v})),
    "stock reference": lambda v: ("/stock/COLA/receive", {"qty": 1, "reference": v}),
    "shift cashier": lambda v: ("/shifts", {"float_amount": 0, "cashier": v}),
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
async def test_the_api_refuses_a_card_number_in_any_text_field(
    till: tuple[httpx.AsyncClient, EventLog], field: str, variant: str, tmp_path: Path
) -> None:
    client, log = till
    url, body = FIELDS[field](VARIANTS[variant])
    before = log.version_vector()
    r = await client.post(url, json=body)
    assert r.status_code == 422, (r.status_code, r.text)
    assert "4111" not in r.text  # refused as a card number, or by the SKU's form
    assert "card number" in r.text or field == "sku"
    assert log.version_vector() == before
    assert _files_hold_no_card_number(tmp_path)


@pytest.mark.parametrize("text", ["ann\x00", "ann\x1b[31m", "line\nbreak"])
async def test_text_fields_refuse_control_characters(
    till: tuple[httpx.AsyncClient, EventLog], text: str
) -> None:
    client, _ = till
    r = await client.post("/sales", json=_sale(cashier=text))
    assert r.status_code == 422 and "control character" in r.text, r.text


async def test_a_404_never_repeats_a_card_number(till: tuple[httpx.AsyncClient, EventLog]) -> None:
    client, _ = till
    for variant in ("4111 1111 1111 1111", PAN):
        r = await client.get(f"/sales/s1/t1:{variant}")
        assert r.status_code in (404, 422) and "4111" not in r.text, r.text
    r = await client.get(f"/catalog/SKU-{PAN}")
    assert r.status_code in (404, 422) and "4111" not in r.text, r.text


def _forged(origin: str, cashier: str) -> Event:
    """A sale written by a till that skips the checks (an old or hostile build)."""
    body = {
        "receipt": "R-1",
        "lines": [{"sku": "COLA", "qty": 1, "unit_price": 150}],
        "payments": [{"method": "cash", "amount": 150}],
        "cashier": cashier,
    }
    ev = Event(
        origin, 1, 1 << 16, SCHEMA_VERSION, "sale.completed", msgspec.msgpack.encode(body), b""
    )
    return ev


@pytest.mark.parametrize("variant", ["nbsp", "dots", "in a sku"])
async def test_an_event_from_the_network_with_a_card_number_is_refused_and_not_kept(
    tmp_path: Path, variant: str
) -> None:
    async with await open_log(tmp_path / "log.db", "s1/t1") as log:
        forged = _forged("s1/t2", VARIANTS[variant])
        honest = _forged("s1/t3", "ann")
        result = await log.ingest_raw([encode_event(forged), encode_event(honest)], "s1/t2")
        assert [type(e) for e in result.rejected] == [CardNumberInText]
        assert result.accepted == [honest]  # one bad event never fails honest work
        rows = await log.read(lambda c: c.execute("SELECT kind, raw FROM quarantine").fetchall())
        assert rows == [("CardNumberInText", b"")]  # evidence without the card data
        assert event_hash(forged)  # (the hash chain needs no body text)
    assert _files_hold_no_card_number(tmp_path)


def _files_hold_no_card_number(folder: Path) -> bool:
    """No file of the log holds the test number, in any of the encodings used above."""
    needles = {v.encode() for v in VARIANTS.values()} | {PAN.encode()}
    for path in folder.glob("*.db*"):
        data = path.read_bytes()
        if any(n in data for n in needles):
            return False
    return True


def _forged_at(origin: str, seq: int, cashier: str, prev: bytes = b"\x01" * 32) -> Event:
    ev = _forged(origin, cashier)
    return msgspec.structs.replace(ev, seq=seq, prev=prev)


async def test_a_card_number_ahead_of_a_gap_is_not_held_either(tmp_path: Path) -> None:
    """An event that would wait for its predecessor was kept whole in `pending`."""
    async with await open_log(tmp_path / "log.db", "s1/t1") as log:
        ahead = _forged_at("s1/t2", 5, VARIANTS["dots"])
        result = await log.ingest_raw([encode_event(ahead)], "s1/t2")
        assert [type(e) for e in result.rejected] == [CardNumberInText] and result.held == 0
        pending = await log.read(lambda c: c.execute("SELECT count(*) FROM pending").fetchone())
        assert pending == (0,)
    assert _files_hold_no_card_number(tmp_path)


async def test_an_equivocating_copy_with_a_card_number_is_kept_without_it(tmp_path: Path) -> None:
    async with await open_log(tmp_path / "log.db", "s1/t1") as log:
        honest = _forged("s1/t2", "ann")
        await log.ingest([honest])
        copy = _forged("s1/t2", VARIANTS["nbsp"])  # same (origin, seq), other bytes
        result = await log.ingest_raw([encode_event(copy)], "evil")
        assert result.rejected
        rows = await log.read(lambda c: c.execute("SELECT raw FROM quarantine").fetchall())
        assert rows == [(b"",)]
    assert _files_hold_no_card_number(tmp_path)
