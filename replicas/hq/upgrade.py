"""Events an older HQ build stored unapplied, applied once a newer build reads them.

A build stores an event of a type or schema newer than it knows (`FLAG_UNAPPLIED`) and
serves it, but writes no read-model rows for it (a till upgraded before HQ sells with
tax, schema 6). SQLite replicas apply such events at the rebuild a new fold version
makes (`core.compact`); on PostgreSQL each worker, when it opens the database, applies
those of its own origins that this build reads, in one transaction, and clears their
flag. The rows are the ingest's (`project.Facts`): keyed by event, so order-free.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection

from core.errors import TillmeshError
from core.events import Body, Event, decode_body, decode_event
from core.fold import FLAG_REVOKED, FLAG_UNAPPLIED
from replicas.hq.project import Facts

__all__ = ["apply_readable"]

_UNAPPLIED = (
    "SELECT store, origin, seq, raw FROM hq_events"
    f" WHERE flags & {FLAG_UNAPPLIED} <> 0 AND flags & {FLAG_REVOKED} = 0"
)  # the partial index hq_events_unapplied finds them without reading every event
_CLEAR = (
    f"UPDATE hq_events e SET flags = e.flags & ~{FLAG_UNAPPLIED}"
    " FROM unnest(%s::text[], %s::text[], %s::int8[]) AS k(store, origin, seq)"
    " WHERE e.store = k.store AND e.origin = k.origin AND e.seq = k.seq"
)


def _readable(raw: bytes) -> tuple[Event, Body] | None:
    """The event and its body if this build reads it (as `core.compact`: stored events
    were accepted under the text rules of their day)."""
    ev = decode_event(raw)
    try:
        return ev, decode_body(ev, check_text=False)
    except TillmeshError:
        return None  # still newer than this build: left for one that reads it


async def apply_readable(
    conn: AsyncConnection[Any],
    owns: Callable[[str], bool],
    write: Callable[[Facts], Awaitable[None]],
) -> int:
    """In the caller's transaction: the read-model rows of the stored-unapplied events
    of the origins `owns` says are this worker's, written by `write`; returns how many."""
    cur = await conn.execute(_UNAPPLIED)
    applied: list[tuple[Event, Body]] = []
    keys: list[tuple[str, str, int]] = []
    for store, origin, seq, raw in await cur.fetchall():
        found = _readable(bytes(raw)) if owns(origin) else None
        if found is not None:
            applied.append(found)
            keys.append((str(store), str(origin), int(seq)))
    if not applied:
        return 0
    facts = Facts()
    facts.add(applied)
    await write(facts)
    stores, origins, seqs = (list(col) for col in zip(*keys, strict=True))
    await conn.execute(_CLEAR, (stores, origins, seqs))
    return len(applied)
