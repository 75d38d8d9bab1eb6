"""A replica key HQ rotated (`key.rotated`), as the log applies it: the rotations learned
(meta 'keys'), the events held because a key signed them that this replica did not know
yet (table `unverified`), and what the retired key wrote past the rotation (evicted).

Why events are held and not refused: a till signs with its new key from the moment it
switches, while HQ's word for that key reaches each replica in its own time. Refused, the
till's honest events would be blamed on whichever peer relayed them; held, they wait for
the rotation and are applied when it comes. A forgery naming a made-up key waits forever
but is never state, within the same bound as events held for a gap.

Why evicted: before it heard of the rotation a replica may have taken events the old key
signed past the rotation's seq (a thief with the old key). They occupy seqs the till's
genuine events need, so once the rotation is known they leave the chain for quarantine
(evidence), the origin's head goes back to the last event the valid key vouches for, and
the state is rebuilt if any had been folded.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence

from core import segments
from core.errors import SignatureError, TillmeshError
from core.events import Event, decode_event, event_hash
from core.fold import FLAG_REVOKED, FLAG_UNAPPLIED
from core.keys import KeyRegistry
from core.signing import decode_public_key, encode_public_key

__all__ = [
    "UNVERIFIED_TABLE",
    "Rotations",
    "Vouchers",
    "dump_rotations",
    "load_checkpoints",
    "load_rotations",
    "retired_suffix",
    "take_unverified",
    "with_checkpoints",
    "with_rotations",
]

Rotations = dict[str, list[tuple[int, bytes]]]  # origin -> (from_seq, key) in HQ's order

# Created at open, not by a migration: an older build keeps opening the file (and never
# reads the table). Held rows survive restarts, like `pending`.
UNVERIFIED_TABLE = """CREATE TABLE IF NOT EXISTS unverified (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    raw    BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID"""


def load_rotations(meta: Mapping[str, object]) -> Rotations:
    stored = json.loads(str(meta.get("keys", "{}")))
    return {o: [(int(n), decode_public_key(k)) for n, k in steps] for o, steps in stored.items()}


def dump_rotations(rotations: Rotations) -> str:
    return json.dumps(
        {o: [[n, encode_public_key(k)] for n, k in steps] for o, steps in rotations.items()},
        sort_keys=True,
    )


def load_checkpoints(meta: Mapping[str, object]) -> dict[str, int]:
    """origin -> seq of its `log.signed` checkpoint, as this log learned them (meta)."""
    return {str(o): int(n) for o, n in json.loads(str(meta.get("checkpoints", "{}"))).items()}


def with_checkpoints(registry: KeyRegistry, checkpoints: Mapping[str, int]) -> KeyRegistry:
    for origin in checkpoints:
        registry = registry.checkpointed(origin)
    return registry


def with_rotations(registry: KeyRegistry, rotations: Rotations) -> KeyRegistry:
    for origin, steps in rotations.items():
        for from_seq, key in steps:
            registry = registry.rotated(origin, from_seq, key)
    return registry


def take_unverified(conn: sqlite3.Connection, origin: str, from_seq: int) -> list[bytes]:
    """Every event of `origin` held for an unknown key, and every one held for a gap at
    or past `from_seq` (its signature was checked with the key retired there), removed
    from their tables: they are checked again now (and held again if they still wait)."""
    rows = conn.execute(
        "SELECT seq, raw FROM unverified WHERE origin=? UNION ALL"
        " SELECT seq, raw FROM pending WHERE origin=? AND seq>=? ORDER BY seq",
        (origin, origin, from_seq),
    ).fetchall()
    conn.execute("DELETE FROM unverified WHERE origin=?", (origin,))
    conn.execute("DELETE FROM pending WHERE origin=? AND seq>=?", (origin, from_seq))
    return [raw for (_, raw) in rows]


class Vouchers:
    """Reads an origin's stored events, newest first, for `retired_suffix`."""

    def __init__(self, conn: sqlite3.Connection, staged: Mapping[tuple[str, int], bytes]) -> None:
        self.conn = conn
        self.staged = staged  # raw bytes of events accepted in the open transaction

    def event(self, origin: str, seq: int) -> Event | None:
        raw = self.staged.get((origin, seq))
        if raw is None:
            raw = segments.raw_at(self.conn, origin, seq)
        try:
            return decode_event(raw) if raw is not None else None
        except TillmeshError:
            return None


def retired_suffix(
    vouchers: Vouchers, registry: KeyRegistry, origin: str, from_seq: int, head: int, base: int
) -> int:
    """The last seq of `origin` that stays: the newest event at or past `from_seq` whose
    own signature the now valid key verifies (its chain vouches for all below), else
    `from_seq - 1`. Everything above it was signed by the retired key (or by no one)."""
    for seq in range(head, max(from_seq, base + 1) - 1, -1):
        ev = vouchers.event(origin, seq)
        if ev is None or not ev.sig:
            continue  # covered at ingest by a signature above it, or compacted
        try:
            registry.verify(ev, event_hash(ev))
        except SignatureError:
            continue
        return seq
    return max(from_seq - 1, base)


def folded_among(conn: sqlite3.Connection, origin: str, above: int) -> int:
    """How many of `origin`'s stored events above `above` were folded (not flagged)."""
    unfolded = conn.execute(
        "SELECT count(*) FROM event_flags WHERE origin = ? AND seq > ? AND flags & ?",
        (origin, above, FLAG_UNAPPLIED | FLAG_REVOKED),
    ).fetchone()[0]
    return segments.count(conn, origin, above) - int(unfolded)


def evict_stored(conn: sqlite3.Connection, origin: str, above: int) -> Sequence[tuple[int, bytes]]:
    """Remove `origin`'s committed events above seq `above`; their (seq, raw)."""
    rows = [(row[1], row[6]) for row in segments.rows(conn, origin, above)]
    segments.delete_range(conn, origin, above + 1, 1 << 62)
    return rows
