"""The reads one ingest batch's decisions need of HQ's PostgreSQL store, made up front
in its transaction so `admit.Admission` decides in memory: HQ's revocations and key
rotations (`hq_meta`), the events held after a gap, the stored hashes of duplicates;
and, at a worker's start, its tills' `log.signed` checkpoints."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection

from core.events import Event

__all__ = ["pending_rows", "read_checkpoints", "read_meta", "stored_hashes"]


async def read_meta(conn: AsyncConnection[Any]) -> dict[str, str]:
    """HQ's revocations and rotations, as JSON ('revoked', 'keys')."""
    cur = await conn.execute("SELECT key, value FROM hq_meta WHERE key IN ('revoked', 'keys')")
    return {str(k): str(v) for k, v in await cur.fetchall()}


async def read_checkpoints(
    conn: AsyncConnection[Any], owns: Callable[[str], bool]
) -> dict[str, int]:
    """origin -> seq of its `log.signed` checkpoint, of the origins a worker owns."""
    cur = await conn.execute("SELECT origin, seq FROM hq_checkpoints")
    return {str(o): int(s) for o, s in await cur.fetchall() if owns(str(o))}


async def pending_rows(
    conn: AsyncConnection[Any], origins: Iterable[str]
) -> Callable[[str, int], list[bytes]]:
    """Held raws of `origins` (those that hold any; rare: after a gap), as
    `pending(origin, above)`: the ones past seq `above`, in seq order."""
    held: dict[str, list[tuple[int, bytes]]] = {}
    wanted = sorted(origins)
    if wanted:
        cur = await conn.execute(
            "SELECT origin, seq, raw FROM hq_pending WHERE origin = ANY(%s) ORDER BY origin, seq",
            (wanted,),
        )
        for origin, seq, raw in await cur.fetchall():
            held.setdefault(origin, []).append((int(seq), bytes(raw)))

    def pending(origin: str, above: int) -> list[bytes]:
        return [raw for seq, raw in held.get(origin, []) if seq > above]

    return pending


async def stored_hashes(
    conn: AsyncConnection[Any], duplicates: Sequence[tuple[Event, bytes, str]]
) -> dict[tuple[str, int], bytes]:
    """The stored hash of each duplicate's (origin, seq), to tell a twin."""
    if not duplicates:
        return {}
    keys = {(ev.origin, ev.seq) for ev, _, _ in duplicates}
    origins = [o for o, _ in keys]
    cur = await conn.execute(
        "SELECT e.origin, e.seq, e.hash FROM hq_events e"
        " JOIN unnest(%s::text[], %s::text[], %s::int8[]) AS k(store, origin, seq)"
        " ON e.store = k.store AND e.origin = k.origin AND e.seq = k.seq",
        ([o.partition("/")[0] for o in origins], origins, [s for _, s in keys]),
    )
    return {(o, int(s)): bytes(h) for o, s, h in await cur.fetchall()}
