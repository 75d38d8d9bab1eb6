"""Property: canonical encoding round-trips byte for byte, for every event the
scenario generator can make (all body types, all origins, interleaved HLCs)."""

from hypothesis import given, settings

from core.events import (
    decode_body,
    decode_event,
    decode_events,
    encode_body,
    encode_event,
    encode_events,
)
from tests.conflict.factory import scenarios


@settings(max_examples=200)
@given(scenarios(max_events=30))
def test_encode_decode_is_the_identity_on_bytes(batch):
    events = [acc.event for acc in batch]
    for ev, acc in zip(events, batch, strict=True):
        raw = encode_event(ev)
        again = decode_event(raw)
        assert again == ev and encode_event(again) == raw
        body = decode_body(again)
        assert body == acc.body and encode_body(body) == (ev.type, ev.body)
    assert decode_events(encode_events(events)) == events
