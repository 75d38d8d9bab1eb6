"""HQ's key events at its PostgreSQL ingest: revocations (`key.revoked`, `revoke`) and
rotations (`key.rotated`), as the SQLite log applies them (`core.rotation`,
`core.batch.Transaction`).

HQ's rotations are kept in `hq_meta` ('keys', `core.rotation.dump_rotations`' form),
written by the worker that takes the `key.rotated` in and read by every worker per
batch, beside the revocations: its checks use the keys in force from then on. An event
signed by a key not known yet is held in `hq_unverified` (`admit.py`), not refused.
When a worker learns a rotation of a till it owns (in the batch that carries it, or
from `hq_meta` when another worker took it in), in that batch's transaction it:

- evicts what the retired key wrote past the rotation's seq (a thief's events stored
  before the rotation was known): the events leave `hq_events` and the read model for
  `hq_quarantine` (evidence) and the chain's head goes back to the newest event the now
  valid key vouches for (`core.rotation.retired_suffix`);
- checks again the events held for an unknown key of that till, and those held for a
  gap past the rotation's seq (checked with the old key), as if just received.

A till's `log.signed` checkpoint (`core.keys`: its history from before signing vouched
for) is taken by the worker that owns the till (`admit.Admission`), kept in
`hq_checkpoints` and read at its start: from then on the till's unsigned events are
refused, and those held above the checkpoint (taken on trust) are checked again, as the
SQLite log's `Transaction._checkpoint` does (`apply_checkpoints`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from psycopg import AsyncConnection, sql

from core.batch import HELD_PEER
from core.checks import NO_HEAD, check_events
from core.events import Event, RawEvent, decode_event, event_hash
from core.fold import FLAG_REVOKED
from core.keys import KeyRegistry
from core.rotation import Rotations, Vouchers, dump_rotations, retired_suffix
from replicas.hq.admit import Admission
from replicas.hq.project import REVOCABLE

__all__ = ["apply_checkpoints", "apply_rotations", "changed_origins", "revoke", "store_rotations"]

Steps = list[tuple[str, int]]  # (origin, from_seq) whose retired key's events go
VOUCH_CHUNK = 256  # stored events read at a time looking for the newest the key vouches


def changed_origins(known: Rotations, now: Rotations) -> Steps:
    """Each origin whose rotations differ, from the first seq they differ at."""
    out: Steps = []
    for origin, steps in sorted(now.items()):
        old = known.get(origin, [])
        for i, step in enumerate(steps):
            if i >= len(old) or old[i] != step:
                out.append((origin, step[0]))
                break
    return out


async def store_rotations(conn: AsyncConnection[Any], rotations: Rotations) -> None:
    await conn.execute(
        "INSERT INTO hq_meta VALUES ('keys', %s) ON CONFLICT (key) DO UPDATE"
        " SET value = excluded.value",
        (dump_rotations(rotations),),
    )


class _Stored(Vouchers):
    """An origin's events at and past a seq, as read for `retired_suffix`."""

    def __init__(self, raws: Mapping[int, bytes]) -> None:
        self.raws = raws

    def event(self, origin: str, seq: int) -> Event | None:
        raw = self.raws.get(seq)
        return decode_event(raw) if raw is not None else None


async def apply_rotations(
    conn: AsyncConnection[Any], adm: Admission, steps: Steps, wall_ms: int
) -> None:
    """In the batch's transaction: evict, then release held events, per step."""
    for origin, from_seq in steps:
        if isinstance(adm.verifier, KeyRegistry):
            await _evict(conn, adm, origin, from_seq, wall_ms)
        await _release(conn, adm, origin, from_seq)


async def apply_checkpoints(conn: AsyncConnection[Any], adm: Admission) -> None:
    """In the batch's transaction: keep each checkpoint learned, release what it holds."""
    for origin, from_seq in adm.checkpointed:
        await conn.execute(
            "INSERT INTO hq_checkpoints VALUES (%s, %s) ON CONFLICT (origin) DO NOTHING",
            (origin, from_seq - 1),
        )
        await _release(conn, adm, origin, from_seq)


async def _evict(
    conn: AsyncConnection[Any], adm: Admission, origin: str, from_seq: int, wall_ms: int
) -> None:
    assert isinstance(adm.verifier, KeyRegistry)
    head = adm.head(origin)[0]
    if head < from_seq:
        return
    store = origin.partition("/")[0]
    staged = {r[2]: r[7] for r in adm.rows if r[1] == origin and r[2] >= from_seq - 1}
    keep, raws = await _vouched(conn, adm.verifier, origin, store, from_seq, head, staged)
    if keep >= head:
        return
    await conn.execute(  # the folded state was folded with them: rebuilt (`folded.py`)
        "INSERT INTO hq_meta VALUES ('evictions', '1') ON CONFLICT (key)"
        " DO UPDATE SET value = (hq_meta.value::int8 + 1)::text"
    )
    await conn.execute(
        "DELETE FROM hq_events WHERE store = %s AND origin = %s AND seq > %s", (store, origin, keep)
    )
    for table, where in REVOCABLE.items():  # the read model's rows of the evicted events
        stmt = sql.SQL("DELETE FROM {} WHERE " + where).format(sql.Identifier(table))
        await conn.execute(stmt, (origin, keep))
    adm.rows = [r for r in adm.rows if r[1] != origin or r[2] <= keep]
    adm.applied = [(e, b) for e, b in adm.applied if e.origin != origin or e.seq <= keep]
    why = f"signed by a key HQ retired from seq {from_seq}"
    for seq in sorted(s for s in raws if s > keep):
        adm.new_hashes.pop((origin, seq), None)
        detail = f"{origin}:{seq}: {why}"
        adm.quarantined.append((wall_ms, HELD_PEER, origin, seq, "SignatureError", detail,
                                raws[seq]))  # fmt: skip
    kept = decode_event(raws[keep]) if keep in raws else None
    adm.staged[origin] = (keep, event_hash(kept)) if kept is not None else NO_HEAD
    adm.last_hlc[origin] = kept.hlc if kept is not None else 0
    adm.catalog_stale = True


async def _vouched(
    conn: AsyncConnection[Any], registry: KeyRegistry, origin: str, store: str,
    from_seq: int, head: int, staged: Mapping[int, bytes],
) -> tuple[int, dict[int, bytes]]:  # fmt: skip
    """`retired_suffix` over the stored events, read newest first a chunk at a time (the
    newest usually verifies: a rotation long applied costs one read, not the till's
    history since); the seq that stays, and the raws read down to it (and the one below)."""
    raws: dict[int, bytes] = {}
    top = head
    while top >= from_seq:
        lo = max(from_seq, top - VOUCH_CHUNK + 1)
        cur = await conn.execute(
            "SELECT seq, raw FROM hq_events WHERE store = %s AND origin = %s"
            " AND seq >= %s AND seq <= %s",
            (store, origin, lo - 1, top),
        )
        raws |= {int(s): bytes(r) for s, r in await cur.fetchall()}
        raws |= {s: r for s, r in staged.items() if lo - 1 <= s <= top}
        keep = retired_suffix(_Stored(raws), registry, origin, lo, top, 0)
        if keep >= lo:
            return keep, raws
        top = lo - 1
    return from_seq - 1, raws


async def _release(conn: AsyncConnection[Any], adm: Admission, origin: str, from_seq: int) -> None:
    cur = await conn.execute(
        "DELETE FROM hq_unverified WHERE origin = %s RETURNING seq, raw", (origin,)
    )
    held = [(int(s), bytes(r)) for s, r in await cur.fetchall()]
    cur = await conn.execute(
        "DELETE FROM hq_pending WHERE origin = %s AND seq >= %s RETURNING seq, raw",
        (origin, from_seq),
    )
    # a list, not a map by seq: one held for a key and one held for a gap may share a
    # seq (the till's event and a thief's), and each is checked again, as on SQLite
    held += [(int(s), bytes(r)) for s, r in await cur.fetchall()]
    held += [(s, raw) for o, s, _, raw in adm.unverified if o == origin]
    held += [(s, raw) for o, s, _, raw in adm.held if o == origin and s >= from_seq]
    adm.unverified = [u for u in adm.unverified if u[0] != origin]
    adm.held = [h for h in adm.held if h[0] != origin or h[1] < from_seq]
    if not held:
        return
    events = [RawEvent(decode_event(raw), raw) for _, raw in sorted(held, key=lambda h: h[0])]
    checked = check_events(events, {origin: adm.head(origin)}, adm.verifier)
    adm.ingest(checked, HELD_PEER, adm.released, lambda origin, above: [])


async def revoke(conn: AsyncConnection[Any], newly: dict[str, int], lock: int) -> None:
    """Flag what revoked origins wrote past their cut and take it out of the read model
    (under `lock` exclusive: every worker's batch reads the cuts under it, shared)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
    cur = await conn.execute("SELECT value FROM hq_meta WHERE key = 'revoked'")
    row = await cur.fetchone()
    revoked = {str(k): int(v) for k, v in json.loads(row[0] if row else "{}").items()}
    for origin, cut in newly.items():
        revoked[origin] = min(cut, revoked.get(origin, cut))
        await conn.execute(
            f"UPDATE hq_events SET flags = flags | {FLAG_REVOKED}"
            " WHERE store = %s AND origin = %s AND seq > %s",
            (origin.partition("/")[0], origin, revoked[origin]),
        )
        for table, where in REVOCABLE.items():
            await conn.execute(
                sql.SQL("DELETE FROM {} WHERE " + where).format(sql.Identifier(table)),
                (origin, revoked[origin]),
            )
    await conn.execute(
        "UPDATE hq_meta SET value = %s WHERE key = 'revoked'", (json.dumps(revoked),)
    )
