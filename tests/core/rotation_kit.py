"""A key rotation of s1/t2 as HQ signs it, the events about it, and the keys, shared by
the rotation and compaction tests: t2 signs seqs 1-5 with OLD and from FROM (6) on with
NEW; STOLEN are a thief's events past the rotation under the old key."""

from __future__ import annotations

import msgspec

from core.events import Event, KeyRotated, event_hash
from core.keys import KeyRegistry
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from tests.factories import cash_sale, chain

T2 = "s1/t2"
OLD, NEW, HQ_KEY = (Ed25519Signer(new_signing_seed(), tagged=t) for t in (False, True, False))
MALLORY = Ed25519Signer(new_signing_seed(), tagged=True)
REGISTRY = KeyRegistry({T2: OLD.public_key, "hq": HQ_KEY.public_key})
FROM = 6  # t2 signs with its new key from seq 6


def signed(events: list[Event], signer: Ed25519Signer) -> list[Event]:
    return [msgspec.structs.replace(ev, sig=signer.sign(event_hash(ev))) for ev in events]


def sales(first: int, n: int, prev: bytes, price: int = 100) -> list[Event]:
    bodies = [cash_sale(receipt=f"R{first + i}", price=price + i) for i in range(n)]
    return chain(T2, bodies, prev=prev, first_seq=first, first_hlc=(1 << 16) + first)


BEFORE = signed(sales(1, FROM - 1, b""), OLD)
AFTER = signed(sales(FROM, 5, event_hash(BEFORE[-1])), NEW)  # the till, rotated
STOLEN = signed(sales(FROM, 3, event_hash(BEFORE[-1]), price=1), OLD)  # a thief, old key
(ROTATE,) = signed(
    chain("hq", [KeyRotated(replica=T2, public_key=encode_public_key(NEW.public_key),
                            from_seq=FROM, reason="key file copied")]),
    HQ_KEY,
)  # fmt: skip
