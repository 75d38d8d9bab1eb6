"""Card authorisations a till asked for and stored no sale for: found and reversed.

A till notes each authorisation key durably before the request leaves
(`PendingReversals.asking`), and drops the note once the sale is stored, the card
declined, or the key given back. A note still there `after_s` later (the site's
`card_resolve_after_s`, RESOLVE_AFTER_S by default) was left by a till killed between
the processor's approval and the sale's append, or by an append cancelled and never
committed: the card may be charged for no sale.

Each forwarder round reads such notes and looks for the key in this till's stored
sales since then. A card payment keeps the key it was asked under (`attempt`: the
approved one, or the one that got no answer). Found: the sale is stored, and the note
is dropped. Not found: the key is given back, owed until the processor answers. The
deciding runs under `PendingReversals.deciding`, as a sale does from its first ask to
its append, so a retry of the lost sale is never reversed under it; the reversals are
sent after (`PendingReversals.retry`), so a processor that does not answer never holds
the till's sales. A sale of the window whose event was compacted away leaves its key
unknown: then nothing is reversed, and the keys go to the log as an error for an
operator to check against the processor's records.

    lost = await resolve(log, owed, now_ms, after_s)   # each forwarder round, then
    await owed.retry(processor)                        # sends what is owed
"""

from __future__ import annotations

import logging
import sqlite3

from conflict import cards
from core import segments
from core.clock import pack
from core.events import SaleCompleted, decode_body, decode_event
from core.log import EventLog
from replicas.payments.reversals import PendingReversals

__all__ = ["RESOLVE_AFTER_S", "resolve"]

log = logging.getLogger(__name__)
RESOLVE_AFTER_S = 300  # no sale holds its till this long: an ask this old is over
SLACK_MS = 60_000  # the sale's HLC may lag the wall clock the note was taken by


async def resolve(
    log_: EventLog, owed: PendingReversals, now_ms: int, after_s: float = RESOLVE_AFTER_S
) -> list[str]:
    """Give back the keys asked before `now_ms - after_s` that no stored sale of this
    till holds (owed: `PendingReversals.retry` sends them, outside the lock a sale
    waits on); the keys given back. Undecided while any sale of the window has no
    event left to read (compacted): its key is not known, so nothing is reversed."""
    async with owed.deciding:
        left = await owed.left_asking(now_ms - int(after_s * 1000))
        if not left:
            return []
        since = min(ms for _, ms in left) - SLACK_MS
        till = log_.replica_id
        held, unread = await log_.read(lambda c: _attempts_since(c, till, since))
        await owed.settled([key for key, _ in left if key in held])
        lost = [key for key, _ in left if key not in held]
        if lost and unread:  # said once, with the keys: not every round
            log.error(
                "%s: %d card authorisation(s) asked with no sale found, but %d sale(s) of"
                " that time have no event left (compacted): not reversed; check %s"
                " against the processor's records", till, len(lost), unread, ", ".join(lost),
            )  # fmt: skip
            await owed.settled(lost)
            return []
        if lost:
            log.warning(
                "%s: %d card authorisation(s) asked with no sale stored (the till stopped"
                " mid-sale?): reversing %s", till, len(lost), ", ".join(lost),
            )  # fmt: skip
            await owed.owe(lost)
        return lost


def _attempts_since(conn: sqlite3.Connection, till: str, since_ms: int) -> tuple[set[str], int]:
    """The authorisation keys the card payments of `till`'s sales since `since_ms` hold
    (read from the events: the state keeps no keys), and how many of those sales have
    no event left to read."""
    sales = cards.sales_since(conn, till, pack(max(since_ms, 0), 0))
    if not sales:
        return set(), 0
    wanted, read = set(sales), 0
    keys: set[str] = set()
    for _, seq, _, _, _, _, raw in segments.rows(conn, till, sales[0] - 1, sales[-1]):
        if seq in wanted:  # one pass over the window's segments, holes skipped
            sale = decode_body(decode_event(raw), check_text=False)  # checked when stored
            assert isinstance(sale, SaleCompleted)
            keys.update(p.attempt for p in sale.payments if p.attempt)
            read += 1
    return keys, len(sales) - read
