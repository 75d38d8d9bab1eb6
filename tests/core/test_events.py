import msgspec
import pytest

from core.errors import (
    CardNumberInText,
    DecodeError,
    NonCanonicalEncoding,
    OversizedError,
    SchemaViolation,
    UnknownEventType,
)
from core.events import (
    SCHEMA_VERSION,
    Event,
    Payment,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    SaleCompleted,
    SaleLine,
    SaleVoided,
    ShiftClosed,
    StockAdjusted,
    StockCounted,
    StockReceived,
    decode_body,
    decode_event,
    decode_events,
    encode_body,
    encode_event,
    encode_events,
)
from tests.factories import cash_sale, chain


def test_round_trip_is_byte_identical():
    (ev,) = chain("s1/t1", [cash_sale()])
    raw = encode_event(ev)
    assert encode_event(decode_event(raw)) == raw
    assert decode_body(decode_event(raw)) == cash_sale()


def test_frame_of_events_round_trips():
    events = chain("s1/t1", [cash_sale(receipt=f"R{i}") for i in range(5)])
    assert decode_events(encode_events(events)) == events


@pytest.mark.parametrize(
    "garbage", [b"", b"\xc1", b"\x93\x01\x02", b"\xff" * 10, b"\x98" + b"\x00" * 8]
)
def test_malformed_bytes_are_a_decode_error(garbage):
    with pytest.raises(DecodeError):
        decode_event(garbage)


def test_wrong_field_types_are_a_decode_error():
    raw = msgspec.msgpack.encode(["s1/t1", "one", 1, 1, "sale.completed", b"", b""])
    with pytest.raises(DecodeError):
        decode_event(raw)


def test_oversized_event_is_refused():
    with pytest.raises(OversizedError) as info:
        decode_event(b"\x00" * 70_000)
    assert info.value.size == 70_000


def test_unknown_type_and_future_schema_are_typed():
    (ev,) = chain("s1/t1", [cash_sale()])
    with pytest.raises(UnknownEventType):
        decode_body(msgspec.structs.replace(ev, type="loyalty.points"))
    future = SCHEMA_VERSION + 1
    with pytest.raises(UnknownEventType) as info:
        decode_body(msgspec.structs.replace(ev, schema=future))
    assert info.value.schema == future


def test_an_event_is_written_with_the_lowest_schema_its_body_needs():
    """An older build stores and forwards what it cannot read: only a sale that uses a
    schema-2 field (a manager's approval) waits for its upgrade."""
    assert cash_sale().min_schema() == 1
    approved = msgspec.structs.replace(cash_sale(), approved_by="manager tablet (3f9a)")
    assert approved.min_schema() == 2
    (ev,) = chain("s1/t1", [approved])
    with pytest.raises(SchemaViolation, match="schema-2 fields in a schema-1 event"):
        decode_body(msgspec.structs.replace(ev, schema=1))


# Bodies that carry no person, as every build since schema 1 encodes them: adding `by`
# (schema 3) must not change one byte of them (their hashes chain the logs).
PERSONLESS = [
    (SaleVoided(sale="s1/t1:1", reason="typo"),
     "82a473616c65a773312f74313a31a6726561736f6ea47479706f"),
    (RefundIssued(sale="s1/t1:1", lines=[RefundLine(0, 1, 250)]),
     "82a473616c65a773312f74313a31a56c696e65739183a46c696e6500a371747901a6616d6f756e74ccfa"),
    (StockReceived(sku="A", qty=5), "82a3736b75a141a371747905"),
    (StockAdjusted(sku="A", delta=-1, reason="broken"),
     "83a3736b75a141a564656c7461ffa6726561736f6ea662726f6b656e"),
    (StockCounted(sku="A", count=3), "82a3736b75a141a5636f756e7403"),
    (ProductUpserted(sku="A", name="Cola", price=150),
     "83a3736b75a141a46e616d65a4436f6c61a57072696365cc96"),
    (PriceSet(sku="A", price=160), "82a3736b75a141a57072696365cca0"),
    (ShiftClosed(shift="S1", counted_cash=100),
     "82a57368696674a25331ac636f756e7465645f6361736864"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "golden"), PERSONLESS, ids=lambda v: getattr(v, "TYPE", ""))
def test_who_made_an_event_is_schema_3_and_only_when_named(body, golden):
    assert encode_body(body)[1].hex() == golden and body.min_schema() == 1
    named = msgspec.structs.replace(body, by="C042")
    assert named.min_schema() == 3
    (ev,) = chain("s1/t1", [named])
    assert decode_body(ev) == named
    with pytest.raises(SchemaViolation, match="schema-3 fields in a schema-2 event"):
        decode_body(msgspec.structs.replace(ev, schema=2))
    with pytest.raises(CardNumberInText):
        encode_body(msgspec.structs.replace(body, by="4111 1111 1111 1111"))


def test_body_violating_constraints_is_a_validation_error():
    (ev,) = chain("s1/t1", [cash_sale()])
    bad = msgspec.msgpack.encode({"receipt": "R", "lines": [], "payments": []})
    with pytest.raises(SchemaViolation):
        decode_body(msgspec.structs.replace(ev, body=bad))


def test_non_canonical_body_is_refused():
    (ev,) = chain("s1/t1", [StockAdjusted(sku="A", delta=-2, reason="damaged")])
    reordered = msgspec.msgpack.encode({"reason": "damaged", "delta": -2, "sku": "A"})
    with pytest.raises(NonCanonicalEncoding):
        decode_body(msgspec.structs.replace(ev, body=reordered))


def test_money_must_be_integer_minor_units():
    (ev,) = chain("s1/t1", [cash_sale()])
    floaty = msgspec.msgpack.encode(
        {
            "receipt": "R",
            "lines": [{"sku": "A", "qty": 1, "unit_price": 2.5}],
            "payments": [{"method": "cash", "amount": 2.5}],
        }
    )
    with pytest.raises(SchemaViolation):
        decode_body(msgspec.structs.replace(ev, body=floaty))


def test_payments_must_add_up():
    with pytest.raises(SchemaViolation, match="payments"):
        encode_body(
            SaleCompleted(
                receipt="R",
                lines=[SaleLine(sku="A", qty=2, unit_price=100)],
                payments=[Payment(method="cash", amount=150)],
            )
        )


def test_card_number_never_enters_an_event():
    card = Payment(
        method="card", amount=100, card_token="4111111111111111", card_last4="1111", auth="online"
    )
    with pytest.raises(SchemaViolation, match="card number"):
        encode_body(
            SaleCompleted(
                receipt="R", lines=[SaleLine(sku="A", qty=1, unit_price=100)], payments=[card]
            )
        )
    token = Payment(
        method="card", amount=100, card_token="tok_8f3a9c2e", card_last4="1111", auth="deferred"
    )
    encode_body(
        SaleCompleted(
            receipt="R", lines=[SaleLine(sku="A", qty=1, unit_price=100)], payments=[token]
        )
    )


def test_card_payment_requires_token_last4_and_auth():
    card = Payment(method="card", amount=100, card_last4="1111")
    with pytest.raises(SchemaViolation):
        encode_body(
            SaleCompleted(
                receipt="R", lines=[SaleLine(sku="A", qty=1, unit_price=100)], payments=[card]
            )
        )


def test_envelope_prev_hash_length_is_checked():
    (ev,) = chain("s1/t1", [cash_sale()])
    with pytest.raises(DecodeError):
        decode_event(encode_event(msgspec.structs.replace(ev, prev=b"x" * 5)))
    assert isinstance(decode_event(encode_event(ev)), Event)


def test_equal_bodies_encode_alike_whatever_object_holds_a_default():
    """A default value that is equal but not identical (read from SQLite, say) must not
    change the bytes: peers would refuse them as non-canonical and the chain would stall."""
    cash = "".join(["ca", "sh"])  # equal to the default "cash", not the same object
    explicit = RefundIssued(
        sale="s1/t1:1", lines=[RefundLine(line=0, qty=1, amount=100)], method=cash
    )
    default = RefundIssued(sale="s1/t1:1", lines=[RefundLine(line=0, qty=1, amount=100)])
    assert encode_body(explicit) == encode_body(default)
    (ev,) = chain("s1/t1", [explicit])
    assert decode_body(ev) == explicit
