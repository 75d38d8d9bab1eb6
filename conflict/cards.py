"""Reads of card payments taken offline: the floor limits in force, what a till holds
unforwarded, and what a store has to forward (oldest first).

A deferred payment is outstanding while `st_card_status` shows no outcome for it and
its sale is not voided (a voided sale's payment is never forwarded: the customer took
nothing). Limits are HQ's `card.limits_set` events, the latest (by hlc, origin, seq)
for the store in force, else the latest for every store (''), else `DEFAULT_LIMITS`.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from core.events import CardCaptured, CardDeclined, CardExpired, CardLimitsSet, Event

__all__ = [
    "DEFAULT_LIMITS",
    "CardLimits",
    "card_limits",
    "forwarding_floor",
    "has_outcome",
    "limits_row",
    "outcome_row",
    "outstanding",
    "sales_since",
    "till_outstanding",
]

Record = dict[str, Any]


class CardLimits(NamedTuple):
    per_payment: int  # minor units
    till_total: int  # minor units outstanding per till
    till_count: int  # payments outstanding per till
    max_age_s: int  # forwarded within this, or expired


# Until HQ sets any: cautious, as the card schemes' own floor limits are (a few hundred
# per payment, a day to forward).
DEFAULT_LIMITS = CardLimits(per_payment=25_000, till_total=250_000, till_count=50, max_age_s=86_400)

_OUTCOME_KINDS = {CardCaptured: "captured", CardDeclined: "declined", CardExpired: "expired"}


def limits_row(ev: Event, body: CardLimitsSet) -> tuple[Any, ...]:
    """A `card.limits_set` as the state keeps it (SQLite's st_card_limits, HQ's
    hq_card_limits: the same columns)."""
    return (ev.id, body.store, ev.hlc, ev.origin, ev.seq, body.per_payment,
            body.till_total, body.till_count, body.max_age_s)  # fmt: skip


def outcome_row(ev: Event, body: CardCaptured | CardDeclined | CardExpired) -> tuple[Any, ...]:
    """A card outcome as the state keeps it; its detail is a decline's reason, else the
    processor's reference."""
    detail = getattr(body, "reason", "") or getattr(body, "reference", "")
    kind = _OUTCOME_KINDS[type(body)]
    return (ev.id, body.payment, kind, ev.hlc, ev.origin, ev.seq, detail)


_LIMITS = """
SELECT per_payment, till_total, till_count, max_age_s FROM st_card_limits
WHERE store IN (?, '') ORDER BY store = ? DESC, hlc DESC, origin DESC, seq DESC LIMIT 1
"""


def card_limits(conn: sqlite3.Connection, store: str) -> CardLimits:
    """The floor limits in force for `store`."""
    row = conn.execute(_LIMITS, (store, store)).fetchone()
    return DEFAULT_LIMITS if row is None else CardLimits(*row)


# `+c.hlc`: ordering by the bare column let SQLite walk every sale by st_sales_hlc
# instead of reading the few deferred ones (st_sales_deferred) and sorting them: 411 ms
# against 0.1 at 1,000,000 sales, in the forwarder's every round, which stalled that
# till's sales (idle p99 430 ms, `make soak`'s 1M catch-up bench).
_OUTSTANDING = """
SELECT c.payment, c.sale_id, c.idx, c.store, c.till, c.hlc, c.amount FROM st_card_status c
WHERE c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM st_voids) {where}
ORDER BY +c.hlc, c.payment LIMIT ?
"""


def outstanding(conn: sqlite3.Connection, store: str, limit: int = 1000) -> list[Record]:
    """The store's deferred payments with no outcome yet, oldest first."""
    cur = conn.execute(_OUTSTANDING.format(where="AND c.store = ?"), (store, limit))
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]


def till_outstanding(conn: sqlite3.Connection, till: str) -> tuple[int, int]:
    """(count, amount) of `till`'s deferred payments with no outcome yet."""
    row = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM st_card_status"
        " WHERE till = ? AND outcome IS NULL AND sale_id NOT IN (SELECT sale_id FROM st_voids)",
        (till,),
    ).fetchone()
    return int(row[0]), int(row[1])


_OLDEST_HELD = """
SELECT s.origin, MIN(s.seq) FROM st_card_status c JOIN st_sales s ON s.id = c.sale_id
WHERE c.outcome IS NULL AND c.sale_id NOT IN (SELECT sale_id FROM st_voids)
GROUP BY s.origin
"""


def forwarding_floor(conn: sqlite3.Connection) -> dict[str, int]:
    """Per origin with outstanding deferred payments, the highest seq compaction may
    drop: below the oldest such sale, whose event holds the card token the forwarder
    sends (the state keeps none)."""
    return {origin: int(seq) - 1 for origin, seq in conn.execute(_OLDEST_HELD)}


def has_outcome(conn: sqlite3.Connection, payment: str) -> bool:
    """Whether any outcome of `payment` is folded here (another till's, replicated)."""
    row = conn.execute("SELECT 1 FROM st_card_outcomes WHERE payment = ?", (payment,))
    return row.fetchone() is not None


def sales_since(conn: sqlite3.Connection, till: str, hlc: int) -> list[int]:
    """The seqs of `till`'s own sales at or after `hlc`, in order: where a till looks for
    the authorisation keys its stored sales hold (`replicas.payments.asking`)."""
    rows = conn.execute(
        "SELECT seq FROM st_sales WHERE origin = ? AND hlc >= ? ORDER BY seq", (till, hlc)
    )
    return [int(seq) for (seq,) in rows]
