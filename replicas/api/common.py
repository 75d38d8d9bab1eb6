"""What every router of the till API shares: the replica handle, the per-app `Till`.

`ReplicaHandle` is what the API needs of a running replica; `Till` wraps it with the
receipt counter and the lock that keeps two check-then-append requests apart. The
helpers turn an HLC into the `at` time responses carry and make the usual 404.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import HTTPException
from fastapi import Path as PathParam

from conflict import lookups
from core.clock import hlc_ms
from core.events import Body, Event
from core.log import EventLog
from core.pan import safe_to_show
from replicas.api import models as m
from replicas.api.tax import TaxMode
from replicas.payments.adapter import CardProcessor
from replicas.payments.reversals import PendingReversals

__all__ = [
    "Record",
    "ReplicaHandle",
    "Shop",
    "Sku",
    "Till",
    "event_out",
    "hlc_iso",
    "not_found",
]

T = TypeVar("T")
Record = dict[str, Any]
Sku = Annotated[str, PathParam(min_length=1, max_length=64, pattern=m.SKU_PATTERN)]


class ReplicaHandle(Protocol):
    """What the API needs of a running replica (the log plus what sync knows)."""

    replica_id: str
    log: EventLog

    def sync_status(self) -> dict[str, object]:
        """JSON-able sync state (version vector, peers, lag, incidents, receipts); may be {}."""
        ...

    def online(self) -> bool: ...

    def card_processor(self) -> CardProcessor | None:
        """The card processor to ask now; None if there is none, or the till's link out
        is switched off (card payments are then taken offline, under the floor limits)."""
        ...

    # Reversals of card authorisations this till owes the processor (a till's; None
    # elsewhere): its forwarder sends them again until answered.
    reversals: PendingReversals | None

    def holders(self, origin: str, seq: int) -> list[str]:
        """The replicas known to hold `origin`'s events up to `seq` durably: this one if
        it does, and the peers whose announced vectors say so."""
        ...

    async def rotate_key(self) -> tuple[str, int]:
        """Sign with a new key from the next own event on: (its public key, that seq)."""
        ...

    def unsynced_to_hq(self) -> int:
        """How many of this replica's own events (sales, refunds, stock moves, ...) HQ
        does not yet hold durably."""
        ...


@dataclass(frozen=True)
class Shop:
    """What the till's receipts and prices follow, from the site file."""

    store_name: str = ""  # on receipts; '' shows the store's id
    tax_mode: TaxMode = "inclusive"  # do the catalog's prices include tax?


class Till:
    """Per-app state: the handle, the receipt counter and the check-then-append lock."""

    def __init__(self, replica: ReplicaHandle, shop: Shop | None = None) -> None:
        self.replica = replica
        self.shop = shop or Shop()
        # Receipts: "<store>-<till>-<n>". The prefix is reserved for generated ones.
        self.prefix = replica.replica_id.replace("/", "-") + "-"
        self._counter: int | None = None
        # Sales, voids, refunds and shift changes check local state
        # before appending; the lock keeps two such requests from passing the same check.
        # A till serves one checkout, so holding it across the append costs nothing.
        self.lock = asyncio.Lock()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.replica.log.read(fn)

    async def append(self, body: Body) -> Event:
        return await self.replica.log.append(body)

    async def load_counter(self) -> None:
        if self._counter is None:
            rid, prefix = self.replica.replica_id, self.prefix
            receipt = await self.read(lambda c: lookups.last_receipt(c, rid, prefix))
            tail = receipt[len(prefix) :] if receipt else ""
            # Concurrent first sales all load; the first to finish wins, or a later
            # (stale) read would rewind a counter others have already taken from.
            if self._counter is None:
                self._counter = int(tail) if tail.isdigit() else 0

    def take_receipt(self) -> str:
        """Next generated receipt. Call right before `append` with no await in between:
        then counters reach the log in the order they were taken, so the newest own sale
        always holds the highest counter and `load_counter` resumes after it on restart."""
        assert self._counter is not None
        self._counter += 1
        return f"{self.prefix}{self._counter:06d}"


def hlc_iso(hlc: int) -> str:
    """The HLC's wall time, ISO 8601 in UTC to the millisecond (responses' `at`)."""
    return datetime.fromtimestamp(hlc_ms(hlc) / 1000, UTC).isoformat(timespec="milliseconds")


def event_out(ev: Event) -> m.EventOut:
    return m.EventOut(event_id=ev.id, hlc=ev.hlc, at=hlc_iso(ev.hlc))


# The error answers every router documents in the OpenAPI spec (integrators and the
# fuzz test read it): FastAPI declares only 422 by itself, in a shape we do not send.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorOut, "description": why}
    for code, why in {
        403: "this replica may not make that write (e.g. catalog at a till)",
        404: "no such sale, SKU, shift or conflict here",
        409: "contradicts what this replica knows (a used receipt, a closed shift, ...)",
        413: "request body too large",
        422: "invalid input (the input itself is never echoed)",
        503: "the event log cannot be used right now",
    }.items()
}


def not_found(what: str) -> HTTPException:
    """404 naming what was asked for, unless that could hold card data (a PAN typed
    into a URL): the answer and any proxy's log never repeat it."""
    return HTTPException(404, f"{safe_to_show(what)} not found")
