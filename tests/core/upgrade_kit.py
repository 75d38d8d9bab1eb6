"""A till's history from before signing and its `log.signed` checkpoint (issue 14, item
6), shared by the SQLite log's tests of it and HQ on PostgreSQL's: s1/t2 wrote 8
unsigned events, then its checkpoint (9) and two signed sales (10, 11); FORGED, unsigned
at 12, is a forgery once the checkpoint is known."""

from __future__ import annotations

import msgspec

from core.events import Event, LogSigned, event_hash
from core.keys import KeyRegistry
from core.signing import Ed25519Signer, new_signing_seed
from tests.factories import cash_sale, chain

T2 = "s1/t2"
KEY = Ed25519Signer(new_signing_seed())
STRICT = KeyRegistry({T2: KEY.public_key})  # a site made with keys
UPGRADING = KeyRegistry({T2: KEY.public_key}, unsigned=[T2])  # `site keys --add`
UNSIGNED = chain(T2, [cash_sale(receipt=f"R{i}", price=100 + i) for i in range(8)])


def sign(ev: Event) -> Event:
    return msgspec.structs.replace(ev, sig=KEY.sign(event_hash(ev)))


def next_event(prev: Event, body: object, *, signed: bool = True) -> Event:
    (ev,) = chain(T2, [body], prev=event_hash(prev), first_seq=prev.seq + 1)  # type: ignore[list-item]
    return sign(ev) if signed else ev


CHECKPOINT = next_event(UNSIGNED[-1], LogSigned(unsigned=8))
AFTER = [next_event(CHECKPOINT, cash_sale(receipt="R9", price=300))]
AFTER.append(next_event(AFTER[0], cash_sale(receipt="R10", price=301)))
FORGED = next_event(AFTER[-1], cash_sale(receipt="FORGED", price=1), signed=False)
