"""The log's stored events as segments: one row per contiguous run of one origin's events.

A group commit writes each origin's accepted run as one row (`segments`): the envelope
bytes concatenated (`raw`), their hashes concatenated (32 bytes each, `hashes`) and a
JSON index `idx` of `[start, length, hlc, type]` per event. One row per run instead of
one per event is most of what the log's storage costs per event (issue 19, README
"Figures"): SQLite's per-row work (b-tree insert, key compare, index upkeep) is paid
once per run. `read_range` slices the stored bytes back out, never re-encoding them.

A row may expose only a window of its run: events `first_seq..last_seq` are its
index entries `skip..skip + last_seq - first_seq` (what a trim by compaction or a
retired key's eviction, or a tool deleting one event, leaves), so cutting a run is an
UPDATE of two integers, never a rewrite of its bytes.

Flags (`core.fold.FLAG_*`) are rare and change after the write (revocation, a rebuild
that reads what an older build could not), so they live apart, sparse: `event_flags`
holds a row only for an event whose flags are not 0, and is itself the index of the
events stored unapplied.

The `events` view shows every stored event as one row (origin, seq, hlc, type, flags,
hash, raw), as the table of that name did before schema 3: tools, tests and anything
that scans or looks up one event by SQL read it unchanged (a lookup through it reads
the origin's segments; the log's own hot paths use the functions here instead).
INSTEAD OF triggers make INSERT, UPDATE and DELETE of single events through the view
work too, in plain SQL (a tool's sqlite3 connection has no tillmesh functions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter

import msgspec

__all__ = [
    "MAX_SEGMENT_EVENTS",
    "EventRow",
    "count",
    "create",
    "decode_index",
    "delete_range",
    "first_seq_since",
    "flagged",
    "hash_at",
    "hlc_at",
    "migrate_events_table",
    "origins",
    "raw_at",
    "read_raws",
    "rows",
    "seqs",
    "set_flags",
    "write",
]

# One segment per run, up to this many events: a lookup of one event reads its
# segment's index and bytes, so a run is cut into rows of bounded size.
MAX_SEGMENT_EVENTS = 1024
# Trailing segments shorter than this are merged each time an origin's seq crosses a
# multiple of it (`_coalesce`).
COALESCE_EVENTS = 64
HASH_BYTES = 32
CHUNK = 8  # segments fetched per round trip when scanning (up to ~2 MB of bytes)

# (origin, seq, hlc, type, flags, hash, raw): one event as the `events` view shows it.
EventRow = tuple[str, int, int, str, int, bytes, bytes]
_Entry = tuple[int, int, int, str]  # idx entry: start, length, hlc, type
_encode_idx = msgspec.json.Encoder().encode
_decode_idx = msgspec.json.Decoder(list[_Entry]).decode
decode_index = _decode_idx  # a segment's idx: [start, length, hlc, type] per event
_by_origin_seq = itemgetter(0, 1)
_INSERT = (
    "INSERT INTO segments (origin, first_seq, last_seq, hlc_lo, hlc_hi, idx, hashes, raw)"
    " VALUES (?,?,?,?,?,?,?,?)"
)

_DDL = """
CREATE TABLE segments (
    id        INTEGER PRIMARY KEY,
    origin    TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,
    skip      INTEGER NOT NULL DEFAULT 0,  -- idx entry of first_seq (see the docstring)
    hlc_lo    INTEGER NOT NULL,            -- bounds of the run's hlcs (kept on a trim)
    hlc_hi    INTEGER NOT NULL,
    idx       TEXT NOT NULL,               -- JSON [[start, length, hlc, type], ...]
    hashes    BLOB NOT NULL,               -- event_hash() of each, 32 bytes apiece
    raw       BLOB NOT NULL                -- canonical envelope bytes, concatenated
);
CREATE UNIQUE INDEX segments_by_origin ON segments (origin, first_seq);
CREATE TABLE event_flags (
    origin TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    flags  INTEGER NOT NULL,  -- core.fold.FLAG_*, never 0
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE VIEW events (origin, seq, hlc, type, flags, hash, raw) AS
SELECT s.origin, s.first_seq + j.key - s.skip, j.value ->> 2, j.value ->> 3,
       coalesce((SELECT f.flags FROM event_flags f
                 WHERE f.origin = s.origin AND f.seq = s.first_seq + j.key - s.skip), 0),
       substr(s.hashes, 32 * j.key + 1, 32),
       substr(s.raw, (j.value ->> 0) + 1, j.value ->> 1)
FROM segments s JOIN json_each(s.idx) j
WHERE j.key BETWEEN s.skip AND s.skip + s.last_seq - s.first_seq;
"""

# Cut event OLD.seq out of its segment: the part above it becomes a row of its own
# (same bytes, a later window), the part below keeps the row; an empty row goes.
_CUT_OLD = """
    INSERT INTO segments (origin, first_seq, last_seq, skip, hlc_lo, hlc_hi, idx, hashes, raw)
    SELECT origin, OLD.seq + 1, last_seq, skip + OLD.seq + 1 - first_seq, hlc_lo, hlc_hi,
           idx, hashes, raw
    FROM segments WHERE origin = OLD.origin AND first_seq <= OLD.seq AND last_seq > OLD.seq;
    UPDATE segments SET last_seq = OLD.seq - 1
    WHERE origin = OLD.origin AND first_seq <= OLD.seq AND last_seq >= OLD.seq;
    DELETE FROM segments WHERE origin = OLD.origin AND last_seq < first_seq;
    DELETE FROM event_flags WHERE origin = OLD.origin AND seq = OLD.seq;
"""
_PUT_NEW = """
    INSERT INTO segments (origin, first_seq, last_seq, skip, hlc_lo, hlc_hi, idx, hashes, raw)
    VALUES (NEW.origin, NEW.seq, NEW.seq, 0, NEW.hlc, NEW.hlc,
            json_array(json_array(0, length(NEW.raw), NEW.hlc, NEW.type)), NEW.hash, NEW.raw);
    INSERT INTO event_flags SELECT NEW.origin, NEW.seq, NEW.flags WHERE NEW.flags <> 0;
"""
_TRIGGERS = (
    f"CREATE TRIGGER events_delete INSTEAD OF DELETE ON events BEGIN {_CUT_OLD} END",
    f"CREATE TRIGGER events_update INSTEAD OF UPDATE ON events BEGIN {_CUT_OLD} {_PUT_NEW} END",
    f"CREATE TRIGGER events_insert INSTEAD OF INSERT ON events BEGIN {_PUT_NEW} END",
)


def _execute_each(conn: sqlite3.Connection, script: str) -> None:
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement)


def create(conn: sqlite3.Connection) -> None:
    """The segments, flags, the `events` view and its triggers (in the caller's tx)."""
    _execute_each(conn, _DDL)
    for trigger in _TRIGGERS:
        conn.execute(trigger)


# --- writing ----------------------------------------------------------------------------


def write(conn: sqlite3.Connection, events: Sequence[EventRow]) -> None:
    """Store `events` (new, any order) as one segment per contiguous run of an origin."""
    ordered = sorted(events, key=_by_origin_seq)
    segments: list[tuple[object, ...]] = []
    flags: list[tuple[str, int, int]] = []
    small_runs: list[tuple[str, int]] = []  # (origin, last seq) of runs to coalesce
    i, n = 0, len(ordered)
    while i < n:
        origin, first = ordered[i][0], ordered[i][1]
        j = i + 1
        while (
            j < n
            and j - i < MAX_SEGMENT_EVENTS
            and ordered[j][0] == origin
            and ordered[j][1] == first + j - i
        ):
            j += 1
        segments.append(_segment(ordered[i:j]))
        flags += [(o, s, f) for o, s, _, _, f, _, _ in ordered[i:j] if f]
        if (
            j - i < COALESCE_EVENTS
            and (first - 1) // COALESCE_EVENTS != ordered[j - 1][1] // COALESCE_EVENTS
        ):
            small_runs.append((origin, ordered[j - 1][1]))
        i = j
    conn.executemany(_INSERT, segments)
    if flags:
        conn.executemany("INSERT INTO event_flags VALUES (?,?,?)", flags)
    for origin, last in small_runs:
        _coalesce(conn, origin, last)


def _coalesce(conn: sqlite3.Connection, origin: str, last: int) -> None:
    """Merge the small segments that end `origin`'s stored run at `last` into one row.

    A till appends its own sales one per commit, each a segment of one event; serving
    them back costs a row per event again (read_range: 2.0 µs/event for one-event
    segments against 0.5 for full ones). Each time a run crosses a multiple of
    COALESCE_EVENTS, the trailing small segments (whole, contiguous, ending at `last`)
    are rewritten as one: one rewrite of at most that many events per as many events.
    """
    found = conn.execute(
        f"SELECT {_COLUMNS} FROM segments WHERE origin = ? AND first_seq > ? AND first_seq <= ?"
        " ORDER BY first_seq DESC",
        (origin, last - COALESCE_EVENTS, last),
    ).fetchall()
    merged: list[_Segment] = []
    want = last
    for seg in found:
        _, _, first, seg_last, skip, idx, _, _ = seg
        entries = _decode_idx(idx)
        if seg_last != want or skip != 0 or len(entries) != seg_last - first + 1:
            break  # a hole, or a window cut out of a larger run: left as it is
        merged.append(seg)
        want = first - 1
    if len(merged) < 2:
        return
    merged.reverse()
    rows: list[EventRow] = []
    for _, _, first, _, _, idx, hashes, raw in merged:
        for k, (start, length, hlc, event_type) in enumerate(_decode_idx(idx)):
            h = bytes(hashes[k * HASH_BYTES : (k + 1) * HASH_BYTES])
            rows.append(
                (origin, first + k, hlc, event_type, 0, h, bytes(raw[start : start + length]))
            )
    conn.executemany("DELETE FROM segments WHERE id = ?", [(seg[0],) for seg in merged])
    conn.execute(_INSERT, _segment(rows))


def _segment(run: Sequence[EventRow]) -> tuple[object, ...]:
    idx: list[_Entry] = []
    start = 0
    for _, _, hlc, event_type, _, _, raw in run:
        idx.append((start, len(raw), hlc, event_type))
        start += len(raw)
    hlcs = [e[2] for e in idx]
    # bytearray: bound as a BLOB directly (bytes costs an adapter lookup per value)
    return (
        run[0][0], run[0][1], run[-1][1], min(hlcs), max(hlcs), _encode_idx(idx).decode(),
        bytearray(b"".join(r[5] for r in run)), bytearray(b"".join(r[6] for r in run)),
    )  # fmt: skip


# --- reading ----------------------------------------------------------------------------

_COLUMNS = "id, origin, first_seq, last_seq, skip, idx, hashes, raw"
_Segment = tuple[int, str, int, int, int, str, bytes, bytes]


def _containing(conn: sqlite3.Connection, origin: str, seq: int, columns: str) -> tuple | None:  # type: ignore[type-arg]
    """The segment of `origin` whose window holds `seq` (None: not stored)."""
    row = conn.execute(
        f"SELECT first_seq, last_seq, skip, {columns} FROM segments"
        " WHERE origin = ? AND first_seq <= ? ORDER BY first_seq DESC LIMIT 1",
        (origin, seq),
    ).fetchone()
    if row is None or row[1] < seq:
        return None
    return tuple(row)


def hash_at(conn: sqlite3.Connection, origin: str, seq: int) -> bytes | None:
    """The stored hash of (origin, seq), or None if the log does not hold it."""
    found = _containing(conn, origin, seq, "hashes")
    if found is None:
        return None
    first, _, skip, hashes = found
    at = (skip + seq - first) * HASH_BYTES
    return bytes(hashes[at : at + HASH_BYTES])


def raw_at(conn: sqlite3.Connection, origin: str, seq: int) -> bytes | None:
    """The stored envelope bytes of (origin, seq), or None if the log does not hold it."""
    found = _containing(conn, origin, seq, "idx, raw")
    if found is None:
        return None
    first, _, skip, idx, raw = found
    start, length, _, _ = _decode_idx(idx)[skip + seq - first]
    return bytes(raw[start : start + length])


def hlc_at(conn: sqlite3.Connection, origin: str, seq: int) -> int | None:
    """The hlc of (origin, seq), or None if the log does not hold it."""
    found = _containing(conn, origin, seq, "idx")
    if found is None:
        return None
    first, _, skip, idx = found
    return int(_decode_idx(idx)[skip + seq - first][2])


def _segments_from(
    conn: sqlite3.Connection, origin: str, after: int, upto: int
) -> Iterator[_Segment]:
    """`origin`'s segments whose windows meet seqs after+1..upto, in seq order."""
    below = conn.execute(
        "SELECT max(first_seq) FROM segments WHERE origin = ? AND first_seq <= ?",
        (origin, after + 1),
    ).fetchone()[0]
    cursor = conn.execute(
        f"SELECT {_COLUMNS} FROM segments WHERE origin = ? AND first_seq >= ?"
        " AND first_seq <= ? ORDER BY first_seq",
        (origin, after + 1 if below is None else below, upto),
    )
    while chunk := cursor.fetchmany(CHUNK):
        yield from chunk


def read_raws(conn: sqlite3.Connection, origin: str, from_seq: int, limit: int) -> list[bytes]:
    """Envelope bytes of `origin`'s stored events from `from_seq` on, in seq order, at
    most `limit`, stopping at the first seq not stored (a range has no holes)."""
    out: list[bytes] = []
    want = from_seq
    if limit <= 0:
        return out
    for _, _, first, last, skip, idx, _, raw in _segments_from(
        conn, origin, from_seq - 1, from_seq + limit - 1
    ):
        if want < first or last < want:
            if last < want:
                continue
            break  # a hole: what follows would not chain on
        entries = _decode_idx(idx)
        view = memoryview(raw)
        for seq in range(want, min(last, from_seq + limit - 1) + 1):
            start, length, _, _ = entries[skip + seq - first]
            out.append(bytes(view[start : start + length]))
        want = min(last, from_seq + limit - 1) + 1
        if len(out) >= limit:
            break
    return out


def rows(
    conn: sqlite3.Connection, origin: str | None = None, after: int = 0, upto: int = 1 << 62
) -> Iterator[EventRow]:
    """Stored events in (origin, seq) order, each as the `events` view shows it; of one
    origin's seqs after+1..upto if `origin` is given. Reads segment by segment: a scan
    of the whole log never sorts, nor holds more than a few segments."""
    for o in [origin] if origin is not None else origins(conn):
        flags = dict(
            conn.execute(
                "SELECT seq, flags FROM event_flags WHERE origin = ? AND seq > ? AND seq <= ?",
                (o, after, upto),
            ).fetchall()
        )
        for _, _, first, last, skip, idx, hashes, raw in _segments_from(conn, o, after, upto):
            entries = _decode_idx(idx)
            view = memoryview(raw)
            for seq in range(max(first, after + 1), min(last, upto) + 1):
                k = skip + seq - first
                start, length, hlc, event_type = entries[k]
                h = bytes(hashes[k * HASH_BYTES : (k + 1) * HASH_BYTES])
                raw_bytes = bytes(view[start : start + length])
                yield (o, seq, hlc, event_type, flags.get(seq, 0), h, raw_bytes)


def first_seq_since(conn: sqlite3.Connection, origin: str, hlc: int) -> int | None:
    """The lowest stored seq of `origin` whose hlc is >= `hlc` (None: none is). Only the
    segments whose hlc bound reaches `hlc` are read, in seq order, to the first hit."""
    cursor = conn.execute(
        "SELECT first_seq, last_seq, skip, idx FROM segments WHERE origin = ? AND hlc_hi >= ?"
        " ORDER BY first_seq",
        (origin, hlc),
    )
    for first, last, skip, idx in cursor:
        entries = _decode_idx(idx)
        for seq in range(first, last + 1):
            if entries[skip + seq - first][2] >= hlc:
                return int(seq)
    return None


def origins(conn: sqlite3.Connection) -> list[str]:
    return [o for (o,) in conn.execute("SELECT DISTINCT origin FROM segments ORDER BY origin")]


def count(conn: sqlite3.Connection, origin: str | None = None, after: int = 0) -> int:
    """Events stored (of `origin`, above seq `after`), from the segments' windows."""
    where, params = ("WHERE origin = ? AND last_seq > ?", (origin, after)) if origin else ("", ())
    found = conn.execute(
        f"SELECT sum(last_seq - max(first_seq, ?) + 1) FROM segments {where}",
        (after + 1, *params),
    ).fetchone()[0]
    return int(found or 0)


def flagged(conn: sqlite3.Connection, mask: int) -> list[tuple[str, int, int]]:
    """(origin, seq, flags) of the stored events with any flag of `mask`."""
    return conn.execute(
        "SELECT origin, seq, flags FROM event_flags WHERE flags & ? ORDER BY origin, seq",
        (mask,),
    ).fetchall()


def set_flags(
    conn: sqlite3.Connection, keys: Iterable[tuple[str, int]], add: int = 0, remove: int = 0
) -> None:
    """flags = flags | add & ~remove for each stored (origin, seq) of `keys`."""
    for origin, seq in keys:
        conn.execute(
            "INSERT INTO event_flags VALUES (?, ?, ?) ON CONFLICT (origin, seq)"
            " DO UPDATE SET flags = (flags | ?) & ~?",
            (origin, seq, add & ~remove, add, remove),
        )
    conn.execute("DELETE FROM event_flags WHERE flags = 0")


def seqs(conn: sqlite3.Connection, origin: str, after: int) -> Iterator[int]:
    """`origin`'s stored seqs above `after`, in order (from the windows, no bytes read)."""
    for first, last in conn.execute(
        "SELECT first_seq, last_seq FROM segments WHERE origin = ? AND last_seq > ?"
        " ORDER BY first_seq",
        (origin, after),
    ).fetchall():
        yield from range(max(first, after + 1), last + 1)


def delete_range(conn: sqlite3.Connection, origin: str, lo: int, hi: int) -> int:
    """Remove `origin`'s stored events lo..hi; returns how many there were. A segment cut
    at either end keeps its bytes and narrows its window."""
    removed = count_range = 0
    for seg_id, first, last in conn.execute(
        "SELECT id, first_seq, last_seq FROM segments WHERE origin = ? AND last_seq >= ?"
        " AND first_seq <= ?",
        (origin, lo, hi),
    ).fetchall():
        count_range = min(last, hi) - max(first, lo) + 1
        removed += count_range
        if lo <= first and last <= hi:
            conn.execute("DELETE FROM segments WHERE id = ?", (seg_id,))
            continue
        if last > hi:  # the part above the cut stays, as a row of its own
            conn.execute(
                "INSERT INTO segments (origin, first_seq, last_seq, skip, hlc_lo, hlc_hi, idx,"
                " hashes, raw) SELECT origin, ?1, last_seq, skip + ?1 - first_seq, hlc_lo,"
                " hlc_hi, idx, hashes, raw FROM segments WHERE id = ?2",
                (hi + 1, seg_id),
            )
        if first < lo:
            conn.execute("UPDATE segments SET last_seq = ? WHERE id = ?", (lo - 1, seg_id))
        else:
            conn.execute("DELETE FROM segments WHERE id = ?", (seg_id,))
    conn.execute(
        "DELETE FROM event_flags WHERE origin = ? AND seq >= ? AND seq <= ?", (origin, lo, hi)
    )
    return removed


# --- migration from the events table ------------------------------------------------------


def migrate_events_table(conn: sqlite3.Connection) -> None:
    """Schema 3: the events table's rows into segments, then the view in its place.
    Events, hashes, bytes and flags are kept as they are (the state is not touched)."""
    conn.execute("ALTER TABLE events RENAME TO events_v2")
    conn.execute("DROP INDEX IF EXISTS events_by_hlc")
    conn.execute("DROP INDEX IF EXISTS events_unapplied")
    create(conn)
    cursor = conn.execute(
        "SELECT origin, seq, hlc, type, flags, hash, raw FROM events_v2 ORDER BY origin, seq"
    )
    while batch := cursor.fetchmany(MAX_SEGMENT_EVENTS * 8):
        write(conn, [(o, s, h, t, f, bytes(hs), bytes(r)) for o, s, h, t, f, hs, r in batch])
    conn.execute("DROP TABLE events_v2")
