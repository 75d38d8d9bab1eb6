"""Reversals a till owes the card processor: authorisations of sales it did not store.

A sale's card payments are put to the processor before the sale is stored
(`replicas.api.cards`). When the sale is refused after that (a second card declined,
a payment beyond the floor limits with no override) or its append fails, every
authorisation it asked for that may have been approved - an approval, or a request
that got no answer - is reversed (`give_back`), so no card is charged for a sale that
does not exist. A reversal that gets no answer (or finds no processor) is kept in
SQLite beside the log (`card-reversals.db`) and sent again by the card forwarder's
rounds (`Forwarder.round`) until the processor answers: a till restarted meanwhile
still owes it. A key is owed from before its reversal is sent, so a cancel or a crash
meanwhile leaves it owed. A reversal the processor refuses (a 4xx: it will not do it)
is logged and dropped: sending it again would get the same refusal; but not a refusal
that says nothing of the reversal (401, 403, 408, 429: a key, a rate limit), which
leaves it owed.

Only keys are kept: no token, no card data.

    owed = PendingReversals(data_dir / "card-reversals.db")
    await give_back(processor, owed, ["s1/t1|a|..."])
    await owed.retry(processor)   # each forwarder round
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from replicas.errors import ProcessorRefused, ProcessorUnreachable
from replicas.payments.adapter import CardProcessor

__all__ = ["FILE", "PendingReversals", "give_back"]

log = logging.getLogger(__name__)
FILE = "card-reversals.db"
# Refusals that say nothing of the reversal itself (a wrong or rotated API key, a
# rate limit, a timeout there): the reversal stays owed and is sent again
NOT_AN_ANSWER = frozenset({401, 403, 408, 429})


class PendingReversals:
    """The authorisation keys whose reversal got no answer yet, durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Held by a sale from its first ask to its append (or giving back), and by
        # `asking.resolve`: neither decides a key the other is deciding
        self.deciding = asyncio.Lock()
        conn = self._connect()
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pending (key TEXT PRIMARY KEY, since_ms INTEGER"
                " NOT NULL, tries INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '')"
            )
            # Every key given back, answered or not: never asked again (`was_given`)
            conn.execute("CREATE TABLE IF NOT EXISTS given_back (key TEXT PRIMARY KEY)")
            # Keys being asked, from before the ask until their sale is stored or they are
            # given back or declined: one left behind by a crash is resolved against the
            # log (`replicas.payments.asking`)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS asking"
                " (key TEXT PRIMARY KEY, since_ms INTEGER NOT NULL)"
            )
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # owed money: durable once it says so
        return conn

    def _run(self, sql: str, args: Sequence[object] = ()) -> list[tuple[object, ...]]:
        conn = self._connect()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    async def was_given(self, key: str) -> bool:
        """Whether `key` was given back: a retry of its refused sale must not ask it
        again (the processor would answer it approved, then the owed reversal would
        undo that approval under a sale that is stored)."""
        rows = await asyncio.to_thread(self._run, "SELECT 1 FROM given_back WHERE key = ?", (key,))
        return bool(rows)

    async def asking(self, key: str) -> None:
        """Note `key` about to be asked, durably, before the request leaves: a till killed
        before its sale is stored leaves it here, to be reversed (`asking.resolve`)."""
        await asyncio.to_thread(
            self._run,
            "INSERT INTO asking VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET since_ms ="
            " excluded.since_ms",  # a retry of a lost sale asks it again: young again
            (key, int(time.time() * 1000)),
        )

    async def settled(self, keys: Sequence[str]) -> None:
        """`keys` need no reversal: their sale is stored, or the processor declined them."""
        if keys:
            await asyncio.to_thread(self._forget_asking, keys)

    def _forget_asking(self, keys: Sequence[str]) -> None:
        conn = self._connect()
        try:
            conn.executemany("DELETE FROM asking WHERE key = ?", [(k,) for k in keys])
        finally:
            conn.close()

    async def left_asking(self, before_ms: int) -> list[tuple[str, int]]:
        """(key, since_ms) of the keys asked before `before_ms` and still unresolved."""
        rows = await asyncio.to_thread(
            self._run, "SELECT key, since_ms FROM asking WHERE since_ms < ? ORDER BY since_ms",
            (before_ms,),
        )  # fmt: skip
        return [(str(k), int(ms)) for k, ms in rows]  # type: ignore[call-overload]

    async def owe(self, keys: Sequence[str]) -> None:
        """Note `keys` given back and owed, before their reversals are sent: a cancel or
        a crash meanwhile leaves them owed (and never asked again)."""
        await asyncio.to_thread(self._owe, keys, int(time.time() * 1000))

    def _owe(self, keys: Sequence[str], now_ms: int) -> None:
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT OR IGNORE INTO given_back VALUES (?)", [(k,) for k in keys])
            conn.executemany("INSERT OR IGNORE INTO pending (key, since_ms) VALUES (?, ?)",
                             [(k, now_ms) for k in keys])  # fmt: skip
            conn.executemany("DELETE FROM asking WHERE key = ?", [(k,) for k in keys])
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def failed(self, key: str, error: str) -> None:
        """A reversal sent and not answered: still owed, and why."""
        await asyncio.to_thread(
            self._run,
            "UPDATE pending SET tries = tries + 1, last_error = ? WHERE key = ?",
            (error[:200], key),
        )

    async def paid(self, key: str) -> None:
        await asyncio.to_thread(self._run, "DELETE FROM pending WHERE key = ?", (key,))

    async def keys(self) -> list[str]:
        rows = await asyncio.to_thread(self._run, "SELECT key FROM pending ORDER BY since_ms")
        return [str(key) for (key,) in rows]

    async def retry(self, processor: CardProcessor | None) -> None:
        """Send every owed reversal again."""
        if keys := await self.keys():
            await give_back(processor, self, keys)


async def give_back(
    processor: CardProcessor | None, owed: PendingReversals | None, keys: Sequence[str]
) -> None:
    """Reverse the authorisations `keys`; those that get no answer stay owed (`owed`)."""
    if owed is not None:
        await owed.owe(keys)
    for key in keys:
        error = await _reverse(processor, key)
        if not error:
            if owed is not None:
                await owed.paid(key)
        elif owed is not None:
            log.warning("card authorisation %s: reversal owed (%s)", key, error)
            await owed.failed(key, error)
        else:
            log.error("card authorisation %s: reversal not sent, nowhere to keep it owed", key)


async def _reverse(processor: CardProcessor | None, key: str) -> str:
    """Reverse `key` at the processor: '' once answered (or refused for good), else why
    it is still owed."""
    if processor is None:
        return "no card processor reachable (none, or the till's link out is off)"
    try:
        await processor.reverse(key)
    except ProcessorUnreachable as e:
        return str(e)
    except ProcessorRefused as e:
        if e.status in NOT_AN_ANSWER:
            return str(e)
        log.error("card authorisation %s: the processor refused its reversal: %s", key, e)
    return ""
