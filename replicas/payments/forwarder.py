"""Forward a store's deferred card payments to the processor, and record what became of
each as an event that replicates like a sale.

Every till of a store runs one. A round reads the store's outstanding payments, oldest
first (`conflict.cards.outstanding`: its state holds every till's, so a dead till's
queue is forwarded by its peers), and for each:

- older than the store's `max_age_s`: never sent; `card.expired`;
- else captured at the processor, whose idempotency key is the payment id: two tills
  forwarding one payment after a partition, or a till that died after the capture and
  before its event, get the one answer the processor gave, so it captures once;
  `card.captured` or `card.declined`. A payment whose authorisation got no answer names
  it (`attempt`): the processor answers with the decision it made on it, if it made one,
  so a card approved while its reply was lost is not charged a second time;
- refused by the processor (`ProcessorRefused`, a 4xx: the same request gets the same
  refusal): `card.declined` with the refusal as its reason, so the queue moves on.

Each round first reverses the authorisations this till asked for before it stopped
mid-sale, with no sale stored (`replicas.payments.asking`), then sends the reversals
it owes (`replicas.payments.reversals`: authorisations of sales it did not store,
whose reversal got no answer).

One payment's trouble is its own: the rest of the round goes on. A payment whose sale
event this log no longer holds (compacted away by a tool that did not keep it:
`log compact` keeps outstanding sales, `conflict.cards.forwarding_floor`) is skipped
and logged; a till or HQ that still holds the event forwards it. Only no answer
(`ProcessorUnreachable`: the transport, which every later payment shares) ends the
round, and the next waits longer, doubling up to `max_backoff_s`. No processor (none,
or the link out switched off) leaves only expiry to do. Two tills may both record an
outcome of one payment: the fold keeps one in force (`conflict.schema`'s
st_card_status), so a duplicate is harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from conflict import cards
from core.clock import hlc_ms
from core.events import (
    Body,
    CardCaptured,
    CardDeclined,
    CardExpired,
    SaleCompleted,
    decode_body,
    decode_event,
    parse_event_id,
)
from core.log import EventLog
from replicas.errors import ProcessorRefused, ProcessorUnreachable
from replicas.payments import asking
from replicas.payments.adapter import CardAsk, CardProcessor
from replicas.payments.reversals import PendingReversals

__all__ = ["Forwarder"]

log = logging.getLogger(__name__)
Record = dict[str, Any]
ROUND_SIZE = 200  # payments per round; the rest wait for the next


class Forwarder:
    """One store's forwarding loop on one replica (`run`), or one round (`round`)."""

    def __init__(
        self,
        log_: EventLog,
        store: str,
        processor: Callable[[], CardProcessor | None],
        wall_ms: Callable[[], int],
        *,
        every_s: float = 2.0,
        max_backoff_s: float = 30.0,
        reversals: PendingReversals | None = None,
        resolve_after_s: float = asking.RESOLVE_AFTER_S,
    ) -> None:
        self.log, self.store, self.processor, self.wall_ms = log_, store, processor, wall_ms
        self.reversals, self.resolve_after_s = reversals, resolve_after_s
        self.every_s, self.max_backoff_s = every_s, max_backoff_s
        self.failures = 0
        self.forwarded = 0  # outcomes this replica recorded (for status and tests)

    async def run(self) -> None:
        while True:
            try:
                delay = await self.round()
            except Exception:  # a bad round must not end forwarding for good
                log.exception("%s: forwarding card payments failed", self.log.replica_id)
                delay = self.max_backoff_s
            await asyncio.sleep(delay)

    async def round(self) -> float:
        """Send the reversals owed, then forward or expire what is outstanding; the
        seconds until the next round."""
        processor = self.processor()
        if self.reversals is not None:  # the keys a stopped till asked with no sale stored
            await asking.resolve(self.log, self.reversals, self.wall_ms(), self.resolve_after_s)
        if self.reversals is not None and processor is not None:
            await self.reversals.retry(processor)
        store = self.store
        rows, limits = await self.log.read(
            lambda c: (cards.outstanding(c, store, ROUND_SIZE), cards.card_limits(c, store))
        )
        for row in rows:
            if (self.wall_ms() - hlc_ms(row["hlc"])) / 1000 > limits.max_age_s:
                await self._record(row, CardExpired(payment=row["payment"]))
                continue
            processor = self.processor()
            if processor is None:
                continue  # offline: only expiry to do, further down the queue too
            try:
                ask = await self._ask(row)
            except LookupError as e:
                log.error("%s: cannot forward payment %s: %s", self.log.replica_id,
                          row["payment"], e)  # fmt: skip
                continue
            try:
                outcome = await self._capture(processor, ask)
            except ProcessorUnreachable as e:
                self.failures += 1
                log.info("%s: %s", self.log.replica_id, e)
                return float(min(self.max_backoff_s, self.every_s * 2.0**self.failures))
            await self._record(row, outcome)
        self.failures = 0
        return self.every_s

    async def _capture(self, processor: CardProcessor, ask: CardAsk) -> Body:
        """The outcome of capturing one payment; `ProcessorUnreachable` if no answer."""
        pid = ask.key
        try:
            answer = await processor.capture(ask)
        except ProcessorRefused as e:  # permanent for this request: recorded, not retried
            log.warning("%s: payment %s: %s", self.log.replica_id, pid, e)
            return CardDeclined(payment=pid, reason=f"refused by the processor: {e.detail}"[:200])
        if answer.approved:
            return CardCaptured(payment=pid, reference=answer.reference)
        return CardDeclined(payment=pid, reason=answer.reason, reference=answer.reference)

    async def _ask(self, row: Record) -> CardAsk:
        """The payment as stored in its sale event (the state keeps no token);
        `LookupError` if this log no longer holds the event (compacted)."""
        origin, seq = parse_event_id(row["sale_id"])
        found = await self.log.read_range(origin, seq, 1)
        if len(found) != 1:
            raise LookupError(f"its sale event {row['sale_id']} is not in this log (compacted)")
        (raw,) = found
        sale = decode_body(decode_event(raw), check_text=False)
        assert isinstance(sale, SaleCompleted)
        p = sale.payments[row["idx"]]
        assert p.card_token is not None and p.card_last4 is not None
        return CardAsk(key=row["payment"], token=p.card_token, last4=p.card_last4,
                       amount=p.amount, terminal_ref=p.reference, attempt=p.attempt)  # fmt: skip

    async def _record(self, row: Record, outcome: Body) -> None:
        """Append `outcome` unless one arrived meanwhile (another till's, replicated)."""
        pid = row["payment"]
        if await self.log.read(lambda c: cards.has_outcome(c, pid)):
            return
        await self.log.append(outcome)
        self.forwarded += 1
