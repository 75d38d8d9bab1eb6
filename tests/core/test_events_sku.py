"""The SKU rule moved from a msgspec `pattern` to `check_sku`: it must accept exactly
what `re.search(SKU_PATTERN, sku)` accepts, or replicas of different builds would
disagree on which events are valid."""

from __future__ import annotations

import itertools
import re

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.bodies import SKU_PATTERN, check_sku
from core.errors import SchemaViolation
from core.events import decode_body, encode_body
from tests.factories import cash_sale, chain

_ALPHABET = "aZ09._-\n \t/é\x00:"


def _ok(sku: str) -> bool:
    try:
        check_sku(sku)
    except ValueError:
        return False
    return True


def _old_rule(sku: str) -> bool:
    return re.search(SKU_PATTERN, sku) is not None


def test_check_sku_matches_the_pattern_on_every_short_string() -> None:
    for n in range(1, 5):
        for chars in itertools.product(_ALPHABET, repeat=n):
            sku = "".join(chars)
            assert _ok(sku) == _old_rule(sku), repr(sku)


@given(st.text(min_size=1, max_size=70))
def test_check_sku_matches_the_pattern(sku: str) -> None:
    assert _ok(sku) == _old_rule(sku)


@pytest.mark.parametrize("sku", ["SKU 1", "é", "A\n\n", "\n", "A/B"])
def test_a_sale_with_a_bad_sku_is_refused_on_ingest(sku: str) -> None:
    good = chain("s1/t2", [cash_sale(sku="SKU-1")])[0]
    data = good.body.replace(msgspec.msgpack.encode("SKU-1"), msgspec.msgpack.encode(sku))
    with pytest.raises(SchemaViolation):
        decode_body(msgspec.structs.replace(good, body=data))
    with pytest.raises(SchemaViolation):
        encode_body(cash_sale(sku=sku))
