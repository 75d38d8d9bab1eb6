"""Compaction of a log file: snapshot the state, drop causally stable events.

An event every replica holds durably (HQ included) will never have to be served
again by this replica, so it can go, provided the state it produced stays. Here:

- `compact` takes, per origin, a new `base` (events with seq <= base are dropped),
  never the origin's last event: the kept head lets the chain continue verifiably
  (the first kept event's `prev` names the last dropped one, which `verify` cannot
  check, but every later link it can);
- the snapshot is the state of exactly the events <= base of every origin, kept in
  `snap_<table>` copies of the fold's tables. It is built by folding the newly
  dropped events onto the previous snapshot in a scratch database, so it never
  contains an event that is still in the log;
- `rebuild` = restore the snapshot + fold every event still in the log. With no
  snapshot this is a plain rebuild from the events.

This module knows the `StateFold` protocol and table names the caller passes (the
fold's tables), never merge semantics. Which bases are safe (causal stability over
every known replica's version vector) is the caller's decision; `plan` only clamps.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from core import digest, segments
from core.errors import StorageError, TillmeshError
from core.events import decode_body, decode_event
from core.fold import FLAG_REVOKED, FLAG_UNAPPLIED, Accepted, StateFold

__all__ = [
    "SNAP_PREFIX",
    "CompactReport",
    "HeadRow",
    "compact",
    "fold_rows",
    "has_snapshot",
    "load_snapshot",
    "plan",
    "read_heads",
    "readable_unapplied",
    "rebuild",
    "rebuild_state",
    "save_snapshot",
    "seed_from",
    "snapshot_bases",
    "stable_floor",
    "stale_snapshot",
    "unfoldable",
]

SNAP_PREFIX = "snap_"
STALE_KEY = "stale_snapshot"  # meta: origin -> why the snapshot holds what it must not
CHUNK = 5000
Progress = Callable[[int], None]


@dataclass(frozen=True)
class HeadRow:
    seq: int
    hash: bytes
    base: int


@dataclass
class CompactReport:
    bases: dict[str, tuple[int, int]] = field(default_factory=dict)  # origin -> (old, new)
    dropped: int = 0
    kept: int = 0


def read_heads(conn: sqlite3.Connection) -> dict[str, HeadRow]:
    rows = conn.execute("SELECT origin, seq, hash, base FROM heads ORDER BY origin")
    return {o: HeadRow(s, h, b) for o, s, h, b in rows}


def plan(heads: Mapping[str, HeadRow], floor: Mapping[str, int]) -> dict[str, int]:
    """New bases: the floor, clamped below each head (its last event stays); only raises."""
    bases = {}
    for origin, head in heads.items():
        new = min(floor.get(origin, 0), head.seq - 1)
        if new > head.base:
            bases[origin] = new
    return bases


def stable_floor(
    origins: Iterable[str],
    vectors: Mapping[str, Mapping[str, int]],
    holds: Callable[[str], Callable[[str], bool]],
    required: str,
) -> dict[str, int]:
    """Causal stability: per origin, the highest seq every replica holding it has durably.

    `vectors` are the known replicas' version vectors by replica id; `holds(replica)`
    says which origins a replica keeps (the others never need its events). The
    `required` replica (HQ) must be among them, so nothing it lacks is ever dropped.
    """
    if required not in vectors:
        raise StorageError(
            "compact", f"the version vector of {required!r} is required (give its database)"
        )
    floor = {}
    for origin in origins:
        floor[origin] = min(vv.get(origin, 0) for r, vv in vectors.items() if holds(r)(origin))
    return floor


def has_snapshot(conn: sqlite3.Connection) -> bool:
    row = conn.execute("SELECT value FROM meta WHERE key = 'snapshot_fold_version'").fetchone()
    return row is not None


def snapshot_bases(conn: sqlite3.Connection) -> dict[str, int]:
    row = conn.execute("SELECT value FROM meta WHERE key = 'snapshot_bases'").fetchone()
    return dict(json.loads(row[0])) if row else {}


def stale_snapshot(conn: sqlite3.Connection) -> dict[str, str]:
    """Per origin, why the snapshot holds events that are no longer state (`unfoldable`):
    this log's state differs from its peers' until it is restored from HQ."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (STALE_KEY,)).fetchone()
    return dict(json.loads(row[0])) if row else {}


def unfoldable(conn: sqlite3.Connection, origin: str, above: int, upto: int, why: str) -> bool:
    """`origin`'s events in (above, upto] must leave the state (HQ revoked or retired what
    signed them): if compaction folded some into the snapshot, no rebuild can take them
    out, since a snapshot is one merged state, not one per origin. Then the log is marked
    (meta `stale_snapshot`): `log verify` reports it and `log restore` from HQ, which
    holds the events, mends it. Nothing is dropped meanwhile. True if marked."""
    row = conn.execute("SELECT base FROM heads WHERE origin = ?", (origin,)).fetchone()
    last = min(int(row[0]) if row else 0, upto)
    if last <= above:
        return False
    stale = stale_snapshot(conn)
    stale[origin] = (
        f"{origin}:{above + 1}..{last} {why}, but compaction folded them into the snapshot:"
        " restore this replica from HQ (tillmesh log restore)"
    )
    _set_meta(conn, STALE_KEY, json.dumps(stale, sort_keys=True))
    return True


# --- folding ----------------------------------------------------------------------------


def fold_rows(
    conn: sqlite3.Connection,
    fold: StateFold,
    rows: Iterable[tuple[bytes, int]],
    progress: Progress | None = None,
) -> int:
    """Fold (raw, flags) rows in chunks; events this build cannot decode are skipped."""
    applied, chunk = 0, []
    for raw, flags in rows:
        acc = _accepted_or_none(raw, flags)
        if acc is not None:
            chunk.append(acc)
        if len(chunk) >= CHUNK:
            applied += _apply(conn, fold, chunk, progress)
            chunk = []
    return applied + _apply(conn, fold, chunk, progress)


def _apply(
    conn: sqlite3.Connection, fold: StateFold, chunk: list[Accepted], progress: Progress | None
) -> int:
    if chunk:
        fold.apply(conn, chunk)
        if progress is not None:
            progress(len(chunk))
    return len(chunk)


def _accepted_or_none(raw: bytes, flags: int) -> Accepted | None:
    if flags & FLAG_REVOKED:  # written after its origin was revoked: never state
        return None
    ev = decode_event(raw)
    try:  # stored events: a rule added since (core/pan.py) must not drop one from state
        body = decode_body(ev, check_text=False)
    except TillmeshError:
        return None
    return Accepted(ev, body, flags & ~FLAG_UNAPPLIED)


def _range_rows(
    conn: sqlite3.Connection, origin: str, after: int, upto: int
) -> Iterable[tuple[bytes, int]]:
    for row in segments.rows(conn, origin, after, upto):
        yield row[6], row[4]


# --- snapshot tables ------------------------------------------------------------------------


def load_snapshot(src: sqlite3.Connection, dst: sqlite3.Connection, tables: Sequence[str]) -> None:
    """Replace `dst`'s state tables by `src`'s snapshot copies (same connection allowed).

    Column by column, by name: a snapshot made by an older fold (`reads_snapshots_of`)
    may lack columns a newer one added, which then take their defaults."""
    for table in tables:
        dst.execute(f"DELETE FROM {table}")
        snap = SNAP_PREFIX + table
        if not _exists(src, snap):
            continue
        kept = set(_columns(src, snap))
        names = ", ".join(c for c in _columns(dst, table) if c in kept)
        if src is dst:
            dst.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {snap}")
        else:
            _copy_rows(src, f"SELECT {names} FROM {snap}", dst, f"{table} ({names})")
        digest.recount(dst, table)  # a table the fold counts has no INSERT trigger


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def save_snapshot(src: sqlite3.Connection, dst: sqlite3.Connection, tables: Sequence[str]) -> None:
    """Write `src`'s state tables into `dst`'s snapshot copies, replacing them."""
    for table in tables:
        columns = _columns(src, table)
        if not columns:
            raise StorageError("snapshot", f"state table {table} does not exist")
        snap = SNAP_PREFIX + table
        dst.execute(f"DROP TABLE IF EXISTS {snap}")
        dst.execute(f"CREATE TABLE {snap} ({', '.join(columns)})")
        _copy_rows(src, f"SELECT * FROM {table}", dst, snap)


def _copy_rows(src: sqlite3.Connection, select: str, dst: sqlite3.Connection, table: str) -> None:
    cursor = src.execute(select)
    marks = ", ".join("?" * len(cursor.description))
    while rows := cursor.fetchmany(CHUNK):
        dst.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def _exists(conn: sqlite3.Connection, table: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    return row is not None


# --- compact --------------------------------------------------------------------------------


def compact(
    conn: sqlite3.Connection,
    fold: StateFold,
    tables: Sequence[str],
    floor: Mapping[str, int],
    progress: Progress | None = None,
) -> CompactReport:
    """Drop events <= the planned base of each origin, after snapshotting their state.

    One write transaction on `conn`: the snapshot, the new bases and the deletions
    commit together or not at all.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        report = _compact_tx(conn, fold, tables, floor, progress)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return report


def _compact_tx(
    conn: sqlite3.Connection,
    fold: StateFold,
    tables: Sequence[str],
    floor: Mapping[str, int],
    progress: Progress | None,
) -> CompactReport:
    heads = read_heads(conn)
    bases = plan(heads, floor)
    report = CompactReport({o: (heads[o].base, b) for o, b in bases.items()})
    if bases:
        _check_snapshot_version(conn, fold)
        _write_snapshot(conn, fold, tables, heads, bases, progress)
        for origin, base in bases.items():
            conn.execute("UPDATE heads SET base = ? WHERE origin = ?", (base, origin))
            report.dropped += segments.delete_range(conn, origin, 1, base)
        merged = {**snapshot_bases(conn), **bases}
        _set_meta(conn, "snapshot_bases", json.dumps(merged, sort_keys=True))
        _set_meta(conn, "snapshot_fold_version", fold.version)
    report.kept = segments.count(conn)
    return report


def _write_snapshot(
    conn: sqlite3.Connection,
    fold: StateFold,
    tables: Sequence[str],
    heads: Mapping[str, HeadRow],
    bases: Mapping[str, int],
    progress: Progress | None,
) -> None:
    """Previous snapshot + the events now being dropped, folded in a scratch database."""
    scratch = sqlite3.connect("", isolation_level=None)  # private temporary file
    try:
        scratch.execute("BEGIN")
        fold.create_tables(scratch)
        if has_snapshot(conn):
            load_snapshot(conn, scratch, tables)
            fold.create_tables(scratch)  # lets the fold re-derive what it keeps beside them
        for origin, base in bases.items():
            fold_rows(scratch, fold, _range_rows(conn, origin, heads[origin].base, base), progress)
        save_snapshot(scratch, conn, tables)
        scratch.execute("COMMIT")
    finally:
        scratch.close()


def _check_snapshot_version(conn: sqlite3.Connection, fold: StateFold) -> None:
    """A snapshot is read by the fold that made it, or one that says it reads that
    version's snapshots too (`reads_snapshots_of`: its tables are a subset of theirs),
    so an upgrade does not strand every compacted till."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'snapshot_fold_version'").fetchone()
    readable: tuple[int, ...] = (fold.version, *getattr(fold, "reads_snapshots_of", ()))
    if row is not None and int(row[0]) not in readable:
        raise StorageError(
            "snapshot",
            f"made by fold version {row[0]}, this build folds version {fold.version}; "
            "restore this replica from HQ instead",
        )


def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))


# --- rebuild --------------------------------------------------------------------------------


def rebuild(
    conn: sqlite3.Connection,
    fold: StateFold,
    tables: Sequence[str],
    progress: Progress | None = None,
) -> int:
    """Re-derive the state tables in one transaction; see `rebuild_state`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = rebuild_state(conn, fold, tables, progress)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


def rebuild_state(
    conn: sqlite3.Connection,
    fold: StateFold,
    tables: Sequence[str],
    progress: Progress | None = None,
) -> int:
    """Snapshot (if compacted) + every event in the log -> state; the caller owns the tx."""
    _check_snapshot_version(conn, fold)
    if not has_snapshot(conn) and any(h.base for h in read_heads(conn).values()):
        raise StorageError("snapshot", "log is compacted but holds no snapshot")
    fold.drop_tables(conn)
    fold.create_tables(conn)
    with digest.suspended(conn):  # kept digests: one scan at the end, not a trigger per row
        if has_snapshot(conn):
            load_snapshot(conn, conn, tables)
            fold.create_tables(conn)  # lets the fold re-derive anything its config changes
        applied = fold_rows(conn, fold, _all_rows(conn), progress)
    readable = [(origin, seq) for origin, seq, raw in _unapplied(conn) if _readable(raw)]
    segments.set_flags(conn, readable, remove=FLAG_UNAPPLIED)  # no longer "unapplied"
    _set_meta(conn, "fold_version", fold.version)
    return applied


def readable_unapplied(conn: sqlite3.Connection) -> bool:
    """Whether the log holds events stored unapplied (a type or schema newer than the
    build that received them) which this build reads: a rebuild would apply them."""
    return any(_readable(raw) for _, _, raw in _unapplied(conn))


def _unapplied(conn: sqlite3.Connection) -> list[tuple[str, int, bytes]]:
    """(origin, seq, raw) of the events stored unapplied: few (only while a store's
    builds differ), found by `event_flags`' key."""
    found = []
    for origin, seq, _ in segments.flagged(conn, FLAG_UNAPPLIED):
        raw = segments.raw_at(conn, origin, seq)
        if raw is not None:
            found.append((origin, seq, raw))
    return found


def _readable(raw: bytes) -> bool:
    """Whether this build reads the event. Its type alone does not say (a schema-2 build
    keeps a schema-3 sale.voided unapplied); a rebuild by a build that still cannot read
    it leaves the flag for one that can."""
    return _accepted_or_none(raw, FLAG_UNAPPLIED) is not None


def _all_rows(conn: sqlite3.Connection) -> Iterable[tuple[bytes, int]]:
    for row in segments.rows(conn):
        yield row[6], row[4]


# --- seeding a new log from a compacted one -----------------------------------------------------


def seed_from(
    src: sqlite3.Connection,
    dst: sqlite3.Connection,
    tables: Sequence[str],
    origins: Iterable[str],
) -> dict[str, int]:
    """Give a fresh log `dst` the snapshot of `src` and heads at `src`'s bases.

    For each compacted origin the head is (base, prev of the first kept event), so the
    kept events that follow chain on. `src` and `dst` must hold the same origins (the
    snapshot cannot be split); the caller checks that. Returns the bases seeded.
    """
    heads = read_heads(src)
    bases = {o: heads[o].base for o in origins if o in heads and heads[o].base}
    dst.execute("BEGIN IMMEDIATE")
    try:
        load_snapshot(src, dst, tables)
        save_snapshot(dst, dst, tables)
        for origin, base in bases.items():
            raw = segments.raw_at(src, origin, base + 1)
            if raw is None:
                raise StorageError("seed", f"{origin}: no event after compaction base {base}")
            dst.execute(
                "INSERT INTO heads (origin, seq, hash, base) VALUES (?, ?, ?, ?)",
                (origin, base, decode_event(raw).prev, base),
            )
        _set_meta(dst, "snapshot_bases", json.dumps(bases, sort_keys=True))
        version = src.execute("SELECT value FROM meta WHERE key = 'snapshot_fold_version'")
        _set_meta(dst, "snapshot_fold_version", version.fetchone()[0])
        dst.execute("COMMIT")
    except BaseException:
        dst.execute("ROLLBACK")
        raise
    return bases
