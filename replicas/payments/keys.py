"""The idempotency key of a card authorisation, made by the till (`replicas.api.cards`)
and recomputed from a stored sale (`replicas.payments.asking`): the same inputs, the
same key."""

from __future__ import annotations

import base64
import hashlib

from core.events import Payment
from replicas.payments.adapter import KEY_MAX

__all__ = ["MAX_GENERATIONS", "auth_key"]

MAX_GENERATIONS = 100  # retries of one refused sale (receipt and cards) that ask anew


def auth_key(
    till: str, receipt: str, i: int, p: Payment, cards_of_sale: list[Payment], generation: int = 1
) -> str:
    """The idempotency key of payment `i` of a sale: one per (till, receipt, place, card,
    amount, and the sale's card payments: a retry with another second card after a
    decline asks anew for the first, whose earlier authorisation was reversed).
    Lowercase base32 (digits 2-7 only between letters), so the key a payment keeps
    (`attempt`) passes the card-number rules every event's texts must. `generation`
    > 1: the same payment asked again after its key was given back (`_fresh_key`)."""
    others = ",".join(f"{c.card_token}:{c.amount}" for c in cards_of_sale)
    again = f"|{generation}" if generation > 1 else ""
    what = f"{receipt}|{i}|{p.card_token}|{p.amount}|{others}{again}".encode()
    digest = base64.b32encode(hashlib.blake2b(what, digest_size=15).digest()).decode().lower()
    key = f"{till}|a|{digest}"
    if len(key) > KEY_MAX:  # a till id beyond what sites use: still one key per sale
        long = hashlib.blake2b(key.encode(), digest_size=15).digest()
        return f"a|{base64.b32encode(long).decode().lower()}"
    return key
