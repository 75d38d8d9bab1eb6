"""The one-pass screen over an event's texts (`core.pan.could_hold_either`) never lets
through what the exact per-text rules refuse: it may only send more texts to them."""

from __future__ import annotations

import re

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.bodies import BODY_TYPES
from core.errors import CardNumberInText, SchemaViolation
from core.events import Event, _all_texts, _texts, _unwrap, decode_body
from core.pan import OTHER_DIGITS, contains_card_number, control_character, could_hold_either
from tests.factories import cash_sale, chain

# Digits (ASCII and not), separators card numbers are written with, letters that end a
# run, and control characters: the alphabet where a screen could go wrong.
_ALPHABET = st.sampled_from(list("0123456789 -./Za\u00a0\u200b\u0663\u0000\u001b\u007f\u0085é"))
_TEXT = st.text(_ALPHABET, max_size=40) | st.sampled_from(
    ["4111 1111 1111 1111", "4111111111111111", "s1-t1-000123", "SKU-4006381333931"]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_TEXT, max_size=6), st.booleans())
def test_the_screen_passes_no_text_the_exact_rules_refuse(texts: list[str], ident: bool) -> None:
    refused = any(
        contains_card_number(t, identifier=ident) or control_character(t) is not None for t in texts
    )
    if refused:
        assert could_hold_either(texts)


def test_a_card_number_or_control_character_split_over_two_texts_is_no_hit() -> None:
    # Each text alone is harmless; the letter that joins them ends the digit run.
    assert not could_hold_either(["4111 1111", "1111 1111"])
    assert could_hold_either(["4111 1111 1111 1111"])
    assert could_hold_either(["R1", "line\nbreak"])
    assert could_hold_either(["\u0664\u0661\u0661\u0661" * 4])  # Arabic-Indic digits


def _sale_from(receipt: str, sku: str) -> Event:
    """A sale event as a peer could send it, its texts never checked by an encoder."""
    body = {
        "receipt": receipt,
        "lines": [{"sku": sku, "qty": 1, "unit_price": 250}],
        "payments": [{"method": "cash", "amount": 250}],
    }
    ev = chain("s1/t2", [cash_sale()])[0]
    return msgspec.structs.replace(ev, body=msgspec.msgpack.encode(body))


def test_a_sale_with_a_card_number_or_control_character_is_still_refused() -> None:
    assert decode_body(_sale_from("R1", "SKU-1"))  # the same sale, harmless texts
    with pytest.raises(CardNumberInText, match="receipt looks like a full card number"):
        decode_body(_sale_from("4111 1111 1111 1111", "SKU-1"))
    with pytest.raises(CardNumberInText, match=re.escape("lines[0].sku looks like")):
        decode_body(_sale_from("R1", "4111111111111111"))
    with pytest.raises(SchemaViolation, match="receipt holds a control character"):
        decode_body(_sale_from("R\u001b[2J", "SKU-1"))


def test_the_screen_and_the_exact_check_read_every_text_of_every_body_type() -> None:
    """`_all_texts` (one C call per struct) and `_texts` (the exact check's walk, by
    field name) both read every text a body holds, as an independent walk over its
    builtins finds them: a field either skipped would let a card number through
    unchecked (a list of texts was, `supersedes`). Every text gets a distinct value."""
    for cls in BODY_TYPES.values():
        body = _filled(cls)
        every = sorted(_strings(msgspec.to_builtins(body, builtin_types=(bytes,))))
        assert sorted(_all_texts(body, [])) == every, cls
        assert sorted(text for _, text in _texts(body)) == every, cls
    sale = [text for _, text in _texts(_filled(BODY_TYPES["sale.completed"]))]
    assert "lines[0].sku" in sale and "payments[0].reference" in sale  # nested ones too


def _filled(cls: type[msgspec.Struct], tag: str = "") -> msgspec.Struct:
    """An instance of `cls` (constructed, not validated) with a distinct text in every
    text field, one filled item in every list of structs, every nested struct filled."""
    info = msgspec.inspect.type_info(cls)
    assert isinstance(info, msgspec.inspect.StructType)
    return cls(**{f.name: _value(f.type, f"{tag}{f.name}") for f in info.fields})


def _value(kind: msgspec.inspect.Type, path: str) -> object:
    match kind:
        case msgspec.inspect.Metadata() | msgspec.inspect.UnionType():
            return _value(_unwrap(kind), path)
        case msgspec.inspect.StrType():
            return path
        case msgspec.inspect.LiteralType():
            return kind.values[0]
        case msgspec.inspect.StructType():
            return _filled(kind.cls, f"{path}.")
        case msgspec.inspect.ListType():
            return [_value(kind.item_type, f"{path}[0]")]
        case msgspec.inspect.BoolType():
            return True
        case msgspec.inspect.IntType():
            return 1
        case msgspec.inspect.BytesType():
            return b"x"
    raise AssertionError(f"{path}: no filler for {kind}")


def _strings(value: object) -> list[str]:
    """Every str among `value`'s values (dict keys are field names, not texts)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def _supersede(ids: list[str]) -> Event:
    body = {"conflict": "catalog:SKU-1", "action": "supersede", "by": "manager",
            "supersedes": ids}  # fmt: skip
    ev = chain("s1/t2", [cash_sale()])[0]
    encoded = msgspec.msgpack.encode(body)
    return msgspec.structs.replace(ev, type="conflict.resolved", schema=8, body=encoded)


def test_a_card_number_or_control_character_in_a_list_of_texts_is_refused() -> None:
    """`ConflictResolved.supersedes` (event ids: anything before the colon) was read by
    neither the screen nor the exact check (found in review)."""
    assert decode_body(_supersede(["s1/t1:3"]))
    with pytest.raises(CardNumberInText, match=re.escape("supersedes[0] looks like")):
        decode_body(_supersede(["pan 4111 1111 1111 1111 t:1"]))
    with pytest.raises(SchemaViolation, match=re.escape("supersedes[1] holds a control")):
        decode_body(_supersede(["s1/t1:3", "\u001b[2J:1"]))


def test_the_screen_counts_as_digits_what_the_exact_check_counts() -> None:
    """`_runs` reads digits by `str.isdigit`; the regexes by `\\d` plus `OTHER_DIGITS`,
    which must be exactly the digits that are not decimal (superscripts passed both
    prefilters, found in review)."""
    other = re.compile(f"[{OTHER_DIGITS}]")
    for code in range(0x110000):
        ch = chr(code)
        assert bool(other.fullmatch(ch)) == (ch.isdigit() and not ch.isdecimal()), hex(code)
    superscript = "\u2074\u00b9\u00b9\u00b9 " + "\u00b9\u00b9\u00b9\u00b9 " * 3  # 4111 1111 ...
    assert could_hold_either([superscript]) and contains_card_number(superscript)
