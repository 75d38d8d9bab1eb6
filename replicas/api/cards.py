"""Card payments of a sale: the till, never the client, decides how each is authorised.

Under the till's lock, before the sale is answered, each card payment is put to the
card processor (`ReplicaHandle.card_processor`: None when the till has none or its
link out is switched off):

- approved: `auth: online`, the processor's reference in `approval`;
- declined: the sale is refused (402) with the processor's reason; nothing is stored
  (the cashier takes another method);
- refused (`ProcessorRefused`, a 4xx: the processor answered that it will not do the
  request): the sale is refused (502), never taken offline - an answer is not "no
  answer";
- no answer (`ProcessorUnreachable`: down, timed out, a 5xx, a reply that does not
  parse), or no processor: `auth: deferred`, taken offline (store-and-forward) only
  under the store's floor
  limits (`conflict.cards`): per payment, and this till's unforwarded total and
  count. Beyond them the sale is refused (409, saying which limit) unless the payment
  asks for `override` with a manager's token:
  the override is recorded on the payment (`override_by`).

A sale refused after an authorisation (a later card declined or refused, a limit with
no override), or whose append fails, is not stored: the authorisations it asked for
that may have been approved are reversed (`replicas.payments.reversals`; owed and sent
again by the forwarder while the processor does not answer).

What a client sends as `auth` is not read: an "online" it claims while the till
reaches no processor is stored "deferred", under the limits like any other.

The authorisation key is the till's and a hash of the client's receipt, the payment's
place, the card token and the amount ("<till>|a|<hash>"): a sale retried after a lost
answer is not approved twice, and a retry with a changed basket or another card (after
a decline) is a new authorisation, not a key the processor refuses as reused. A sale
with no receipt gets a random one (a retry of it is a new sale anyway). When an
authorisation got no answer, the deferred payment keeps its key (`attempt`): the
processor may have approved it (the reply lost, timed out or garbled), and the capture
names it so that the card is charged once. An approved payment keeps its key too. The
key holds no receipt text, so nothing in it can look like a card number.

Each key is noted durably before it is asked (`PendingReversals.asking`) and the note
dropped once the sale is stored, declined or given back: a till killed between an
approval and the sale's append leaves the note, and the forwarder reverses the key
unless a stored sale holds it (`replicas.payments.asking`).
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

import msgspec
from fastapi import HTTPException, Request

from conflict import cards
from conflict.cards import CardLimits
from core.events import Payment, SaleCompleted, store_of
from replicas.api import models as m
from replicas.api.auth import made_by
from replicas.api.common import Till
from replicas.api.tokens import Role
from replicas.errors import ProcessorRefused, ProcessorUnreachable
from replicas.payments import reversals
from replicas.payments.adapter import CardAsk, CardProcessor
from replicas.payments.keys import MAX_GENERATIONS, auth_key

__all__ = ["Authorised", "auth_key", "authorise_cards", "give_back"]


def _money(amount: int) -> str:
    return f"{amount // 100:,}.{amount % 100:02d}"


async def _ask(
    processor: CardProcessor | None, owed: reversals.PendingReversals | None, key: str, p: Payment
) -> Payment:
    """The payment as the processor leaves it: online (approved) or deferred (no answer),
    either keeping the key it was asked under (`attempt`); a decline is a 402."""
    if processor is None:
        return msgspec.structs.replace(p, auth="deferred")
    assert p.card_token is not None and p.card_last4 is not None  # a card payment's
    if owed is not None:  # before the request leaves: a crash after it leaves the note
        await owed.asking(key)
    ask = CardAsk(key=key, token=p.card_token, last4=p.card_last4, amount=p.amount,
                  terminal_ref=p.reference)  # fmt: skip
    try:
        answer = await processor.authorise(ask)
    except ProcessorUnreachable:  # perhaps approved there: the capture will say `attempt`
        return msgspec.structs.replace(p, auth="deferred", attempt=key)
    except ProcessorRefused as e:
        raise HTTPException(
            502,
            f"card ending {p.card_last4}: the processor refused the request"
            f" (HTTP {e.status}: {e.detail}): take another method",
        ) from e
    if not answer.approved:
        raise HTTPException(
            402,
            f"card ending {p.card_last4} declined by the processor"
            f" ({answer.reason or 'no reason given'}): take another method",
        )
    return msgspec.structs.replace(p, auth="online", approval=answer.reference, attempt=key)


async def _fresh_key(
    till: Till, rid: str, receipt: str, i: int, p: Payment, of_sale: list[Payment]
) -> str:
    """The payment's key, unless that was given back (its sale refused, its reversal
    perhaps still owed): then the next generation's. A retry of a refused sale with the
    same receipt and cards is a new authorisation, never one being reversed."""
    owed = till.replica.reversals
    for generation in range(1, MAX_GENERATIONS + 1):
        key = auth_key(rid, receipt, i, p, of_sale, generation)
        if owed is None or not await owed.was_given(key):
            return key
    raise HTTPException(
        409, f"card ending {p.card_last4}: this sale was refused {MAX_GENERATIONS} times with"
        " these cards: start it again under a new receipt",
    )  # fmt: skip


def _beyond(limits: CardLimits, amount: int, held: tuple[int, int]) -> str:
    """Which floor limit a deferred payment of `amount` breaks ('' if none), given what
    the till holds unforwarded (count, amount), this sale's earlier ones included."""
    count, total = held
    if amount > limits.per_payment:
        return f"{_money(amount)} is over the offline floor limit of {_money(limits.per_payment)}"
    if total + amount > limits.till_total:
        return (
            f"this till holds {_money(total)} in offline card payments not yet forwarded;"
            f" {_money(amount)} more is over its limit of {_money(limits.till_total)}"
        )
    if count + 1 > limits.till_count:
        return f"this till holds {count} offline card payments, its limit"
    return ""


def _override(request: Request, why: str, asked: bool) -> str:
    """Who takes a payment beyond the floor limits: a manager's explicit decision."""
    if not asked:
        raise HTTPException(
            409,
            f"card processor unreachable and {why}: take another method, or a manager"
            " approves it offline (the payment's override, with a manager's token)",
        )
    role: Role | None = request.state.role
    if role is None or role < Role.manager:
        raise HTTPException(403, f"{why}: taking it offline anyway needs the manager role")
    return made_by(request, "", "approve a card offline") or "manager (open till)"


class Authorised(NamedTuple):
    """A sale's body with its card payments decided, and the authorisations that may
    have been approved (approved, or no answer): reversed if the sale is not stored."""

    body: SaleCompleted
    keys: list[str]


async def authorise_cards(
    till: Till, request: Request, req: m.SaleIn, body: SaleCompleted
) -> Authorised:
    """`body` with each card payment authorised online or taken deferred (module doc).
    A refusal after an authorisation (a later card declined, a limit with no override)
    reverses what was asked (`give_back`) before it is answered."""
    asked: list[str] = []
    try:
        return Authorised(await _authorise(till, request, req, body, asked), asked)
    except BaseException:
        await give_back(till, asked)
        raise


async def give_back(till: Till, keys: list[str]) -> None:
    """Reverse `keys`: their sale is not stored (`replicas.payments.reversals`)."""
    if keys:
        await reversals.give_back(till.replica.card_processor(), till.replica.reversals, keys)


async def _authorise(
    till: Till, request: Request, req: m.SaleIn, body: SaleCompleted, asked: list[str]
) -> SaleCompleted:
    if not any(p.method == "card" for p in body.payments):
        return body
    rid = till.replica.replica_id
    processor = till.replica.card_processor()
    receipt = req.receipt if req.receipt is not None else uuid.uuid4().hex
    store = store_of(rid) or ""
    limits, held = await till.read(
        lambda c: (cards.card_limits(c, store), cards.till_outstanding(c, rid))
    )
    of_sale = [p for p in body.payments if p.method == "card"]
    payments = []
    for i, (p, asking) in enumerate(zip(body.payments, req.payments, strict=True)):
        if p.method == "card":
            key = await _fresh_key(till, rid, receipt, i, p, of_sale)
            asked.append(key)  # before asking: cancelled mid-ask, it may be approved there
            try:
                p = await _ask(processor, till.replica.reversals, key, p)
            except HTTPException:  # declined or refused: an answer, nothing approved
                asked.remove(key)
                if till.replica.reversals is not None:
                    await till.replica.reversals.settled([key])
                raise
            if p.auth == "deferred" and not p.attempt:  # no processor: never asked
                asked.remove(key)
            if p.auth == "deferred":
                if why := _beyond(limits, p.amount, held):
                    p = msgspec.structs.replace(
                        p, override_by=_override(request, why, asking.override)
                    )
                held = (held[0] + 1, held[1] + p.amount)
        payments.append(p)
    return msgspec.structs.replace(body, payments=payments)
