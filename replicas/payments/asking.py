"""Card authorisations a till asked for and stored no sale for: found and reversed.

A till notes each authorisation key durably before the request leaves
(`PendingReversals.asking`), and drops the note once the sale is stored, the card
declined, or the key given back. A note still there `after_s` later (the site's
`card_resolve_after_s`, RESOLVE_AFTER_S by default) was left by a
till killed between the processor's approval and the sale's append, or by an append
cancelled and never committed: the card may be charged for no sale.

Each forwarder round reads such notes and looks for the key in this till's stored
sales since then. A card payment keeps the key it was asked under (`attempt`: the
approved one, or the one that got no answer). Found: the sale is stored, and the note
is dropped. Not found: the key is given back (`reversals.give_back`), and stays owed
until the processor answers. Both run under `PendingReversals.deciding`, as a sale does
from its first ask to its append, so a retry of the lost sale is never reversed
under it.

    lost = await resolve(log, owed, processor, now_ms, after_s)   # each forwarder round
"""

from __future__ import annotations

import logging
import sqlite3

from core import segments
from core.clock import pack
from core.events import SaleCompleted, decode_body, decode_event
from core.log import EventLog
from replicas.payments import reversals
from replicas.payments.adapter import CardProcessor
from replicas.payments.reversals import PendingReversals

__all__ = ["RESOLVE_AFTER_S", "resolve"]

log = logging.getLogger(__name__)
RESOLVE_AFTER_S = 300  # no sale holds its till this long: an ask this old is over
SLACK_MS = 60_000  # the sale's HLC may lag the wall clock the note was taken by


async def resolve(
    log_: EventLog,
    owed: PendingReversals,
    processor: CardProcessor | None,
    now_ms: int,
    after_s: float = RESOLVE_AFTER_S,
) -> list[str]:
    """Reverse the keys asked before `now_ms - after_s` that no stored sale of this till
    holds; the keys reversed (or owed)."""
    async with owed.deciding:
        left = await owed.left_asking(now_ms - int(after_s * 1000))
        if not left:
            return []
        since = min(ms for _, ms in left) - SLACK_MS
        till = log_.replica_id
        held = await log_.read(lambda c: _attempts_since(c, till, since))
        stored = [key for key, _ in left if key in held]
        lost = [key for key, _ in left if key not in held]
        await owed.settled(stored)
        if lost:
            log.warning(
                "%s: %d card authorisation(s) asked with no sale stored (the till stopped"
                " mid-sale?): reversing %s", till, len(lost), ", ".join(lost),
            )  # fmt: skip
            await reversals.give_back(processor, owed, lost)
        return lost


def _attempts_since(conn: sqlite3.Connection, till: str, since_ms: int) -> set[str]:
    """The authorisation keys the card payments of `till`'s sales since `since_ms` hold
    (read from the events: the state keeps no keys)."""
    first, count = conn.execute(
        "SELECT MIN(seq), MAX(seq) - MIN(seq) + 1 FROM st_sales WHERE origin = ? AND hlc >= ?",
        (till, pack(max(since_ms, 0), 0)),
    ).fetchone()
    if first is None:
        return set()
    keys: set[str] = set()
    for raw in segments.read_raws(conn, till, int(first), int(count)):
        ev = decode_event(raw)
        if ev.type == SaleCompleted.TYPE:
            sale = decode_body(ev, check_text=False)  # stored, so checked on the way in
            assert isinstance(sale, SaleCompleted)
            keys.update(p.attempt for p in sale.payments if p.attempt)
    return keys
