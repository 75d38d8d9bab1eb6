"""Replay checkpoints: the state of a log's history at points along it, so replaying to
a moment folds only what lies past the newest checkpoint before it.

A checkpoint is an SQLite file in `<log>.checkpoints/` holding the fold's state tables
(with their maintained digests) for exactly the events up to a version vector `vv`:
per origin, seqs 1..vv[origin]. Checkpoints are cut while folding the history in replay
order (hlc, origin, seq); an origin's HLCs rise with its seqs, so every such prefix is a
version-vector cut. A checkpoint serves a replay to cut C when all its events are at or
before C (its `top`, the greatest (hlc, origin, seq) it holds, is <= C), all its origins
are in the replay's scope, it was made by this fold version and price policy with the
log's revocations as they are now (a `key.revoked` only flags stored events), and the
log still holds the chain it was cut from (the hash at each origin's vv is the one
recorded).

Replay never changes a checkpoint: it folds on top of it inside a transaction that it
rolls back. `build_checkpoints` (`tillmesh log checkpoint`) continues from the newest
checkpoint, so running it again (from cron, or after a busy day) costs only the events
past it. Each checkpoint is a full copy of the state at its point: a log of 1M sales
with one every 100,000 events keeps ten, together about five times the final state.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conflict.policies import state_fold
from conflict.state import StoreState
from core import digest, hlc_order, segments
from core.compact import fold_rows, load_snapshot, read_heads
from core.events import decode_event
from core.sqlite import file_uri, keep_private
from replicas.ops.common import STATE_TABLES, Cut, Progress, Scope, replica_of

__all__ = [
    "DEFAULT_EVERY",
    "DEFAULT_KEEP",
    "Checkpoint",
    "build_checkpoints",
    "checkpoint_dir",
    "list_checkpoints",
    "open_checkpoint",
    "prune_checkpoints",
    "rows_after",
    "usable_checkpoint",
]

DEFAULT_EVERY = 100_000
DEFAULT_KEEP = 10  # what a running replica keeps (`ops.keeper`): spread over its history
_BATCH = 5000


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    events: int  # how many events its state holds
    vv: dict[str, int]
    top: Cut  # the greatest (hlc, origin, seq) among them
    hashes: dict[str, str]  # origin -> hex hash of its event at vv (the chain it was cut from)
    fold_version: int
    replica: str | None
    policy: str = ""  # the fold's price policy and window: the catalog depends on them
    revoked: str = "{}"  # the log's `revoked` meta when cut: what it left out as revoked


def checkpoint_dir(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".checkpoints")


def _read_meta(path: Path) -> Checkpoint | None:
    """A checkpoint's record, or None for a file that is not a finished checkpoint."""
    try:
        conn = sqlite3.connect(file_uri(path, mode="ro"), uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM ck_meta").fetchall())
        finally:
            conn.close()
        top = json.loads(meta["top"])
        return Checkpoint(
            path, int(meta["events"]), json.loads(meta["vv"]), (top[0], top[1], top[2]),
            json.loads(meta["hashes"]), int(meta["fold_version"]), meta.get("replica") or None,
            meta.get("policy", ""), meta.get("revoked", "{}"),
        )  # fmt: skip
    except (sqlite3.Error, KeyError, ValueError, TypeError):
        return None


def list_checkpoints(log_path: Path) -> list[Checkpoint]:
    """The log's finished checkpoints, oldest first."""
    found = (_read_meta(p) for p in sorted(checkpoint_dir(log_path).glob("ck-*.db")))
    return sorted((c for c in found if c is not None), key=lambda c: c.events)


def usable_checkpoint(
    conn: sqlite3.Connection, log_path: Path, before: Cut, scope: Scope
) -> Checkpoint | None:
    """The newest checkpoint whose events all come before `before`, for a replay of
    `conn` over `scope`."""
    fold = state_fold(conn)
    replica = replica_of(conn)
    for ck in reversed(list_checkpoints(log_path)):
        if (
            ck.top < before
            and (ck.fold_version, ck.policy) == (fold.version, _policy(fold))
            and ck.revoked == _revoked(conn)
            and ck.replica == replica
            and all(scope(o) for o in ck.vv)
            and all(ck.vv.get(o, 0) >= h.base for o, h in read_heads(conn).items())
            and _same_chain(conn, ck)
        ):
            return ck
    return None


def _policy(fold: StoreState) -> str:
    return f"{fold.price_policy}/{fold.window_ms}"


def _revoked(conn: sqlite3.Connection) -> str:
    """The log's revocations (origin -> last seq it folds), as a checkpoint records them.
    A `key.revoked` only flags events already stored, their hashes unchanged: without
    this, a checkpoint cut before it would still pass and fold the revoked events. (Key
    rotations need no record: the events they evict are deleted, which the hashes see.)"""
    row = conn.execute("SELECT value FROM meta WHERE key = 'revoked'").fetchone()
    return json.dumps(json.loads(row[0]) if row else {}, sort_keys=True)


def _same_chain(conn: sqlite3.Connection, ck: Checkpoint) -> bool:
    """The log still holds, at each origin's vv, the event the checkpoint was cut after
    (or, where compaction dropped it, the event after it names it as its predecessor)."""
    for origin, seq in ck.vv.items():
        if _hash_at(conn, origin, seq) != ck.hashes.get(origin):
            return False
    return True


def _hash_at(conn: sqlite3.Connection, origin: str, seq: int) -> str | None:
    stored = segments.hash_at(conn, origin, seq)
    if stored is not None:
        return stored.hex()
    after = segments.raw_at(conn, origin, seq + 1)
    return None if after is None else decode_event(after).prev.hex()


Row = tuple[bytes, int, int, str, int, bytes]  # raw, flags, hlc, origin, seq, hash


def open_checkpoint(ck: Checkpoint) -> sqlite3.Connection:
    """The checkpoint's state, in a transaction the caller must roll back (never commit):
    a replay folds on top of it without changing the file.

    Nothing of the fold is written to disk: with cache_spill off the changed pages stay
    in memory until the rollback drops them, so the rollback journal (kept in memory
    too) is never needed on disk. With a journal on disk, folding 100,000 events onto a
    checkpoint of the 1M-event log wrote 40 MB of journal and pages, each spill synced,
    and a rollback that wrote the pages back: 3 s of CPU took 5-9 s on a busy disk.
    A replay killed midway leaves the file as it was (no page of it was written)."""
    conn = sqlite3.connect(ck.path, isolation_level=None)
    digest.register(conn)
    conn.execute("PRAGMA journal_mode = MEMORY")
    conn.execute("PRAGMA cache_spill = OFF")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("BEGIN IMMEDIATE")
    return conn


def rows_after(
    conn: sqlite3.Connection, vv: dict[str, int], cut: Cut | None, scope: Scope
) -> Iterator[Row]:
    """The in-scope events past `vv`, up to `cut`, in replay order. Reads by the hlc
    index from the lowest HLC any origin still needs."""
    # Per origin the log holds (those the checkpoint lacks included: an origin whose
    # events arrived late may hold some older than the checkpoint's newest), the HLC
    # of its first event past `vv`; the earliest of them is where reading starts.
    starts = [
        _first_hlc_after(conn, o, max(vv.get(o, 0), h.base))
        for o, h in read_heads(conn).items()
        if h.seq > vv.get(o, 0)
    ]
    low = min((h for h in starts if h is not None), default=0)
    in_scope = [o for o in segments.origins(conn) if scope(o)]
    merged = hlc_order.in_hlc_order(conn, in_scope, vv)
    if merged is not None:
        for origin, seq, hlc, _, flags, h, raw in merged:
            if cut is not None and (hlc, origin, seq) > cut:
                return
            if hlc >= low:
                yield raw, flags, hlc, origin, seq, h
        return
    where = "WHERE hlc >= ?"
    params: list[object] = [low]
    if cut is not None:
        where += " AND (hlc, origin, seq) <= (?, ?, ?)"
        params += [cut[0], cut[1], cut[2]]
    cursor = conn.execute(
        f"SELECT raw, flags, hlc, origin, seq, hash FROM events {where} ORDER BY hlc, origin, seq",
        params,
    )
    while rows := cursor.fetchmany(2000):
        for row in rows:
            if row[4] > vv.get(row[3], 0) and scope(row[3]):
                yield row


def _first_hlc_after(conn: sqlite3.Connection, origin: str, seq: int) -> int | None:
    return segments.hlc_at(conn, origin, seq + 1)


# --- pruning -------------------------------------------------------------------------------


def prune_checkpoints(log_path: Path, keep: int) -> list[Path]:
    """Delete checkpoints this build can never start from (another fold version), then
    thin the rest to `keep`, spread over the history: each time, the one whose
    neighbours lie closest together goes (never the newest: the next run continues from
    it). Disk stays at `keep` copies of the state; a replay folds at most about the
    history / `keep` events past one. Returns the files deleted."""
    if keep <= 0:
        raise ValueError("keep must be positive")
    every = list_checkpoints(log_path)
    gone = [c for c in every if c.fold_version != StoreState.version]
    kept = [c for c in every if c.fold_version == StoreState.version]
    while len(kept) > keep:
        gaps = [kept[i + 1].events - (kept[i - 1].events if i else 0) for i in range(len(kept) - 1)]
        gone.append(kept.pop(gaps.index(min(gaps))))
    for c in gone:
        c.path.unlink(missing_ok=True)
    return [c.path for c in gone]


# --- building ------------------------------------------------------------------------------


def build_checkpoints(
    conn: sqlite3.Connection,
    log_path: Path,
    every: int = DEFAULT_EVERY,
    progress: Progress | None = None,
) -> list[Checkpoint]:
    """Fold the history past the newest checkpoint, writing one every `every` events;
    returns the checkpoints written. The log is only read (it may be running)."""
    if every <= 0:
        raise ValueError("every must be positive")
    folder = checkpoint_dir(log_path)
    folder.mkdir(mode=0o700, exist_ok=True)  # copies of the state: sales, the owner's alone
    fold, revoked = state_fold(conn), _revoked(conn)
    base = next(
        (
            c
            for c in reversed(list_checkpoints(log_path))
            if (c.fold_version, c.policy, c.revoked) == (fold.version, _policy(fold), revoked)
        ),
        None,
    )
    if base is not None and any(base.vv.get(o, 0) < h.base for o, h in read_heads(conn).items()):
        base = None  # compacted past it: start again from the compaction snapshot
    work = folder / "building.tmp"
    start = base or _from_snapshot(conn, work, fold)
    if base is not None:
        _start_work(work, base, fold)
    written: list[Checkpoint] = []
    try:
        scratch = sqlite3.connect(work, isolation_level=None)
        try:
            digest.register(scratch)
            written = _fold_and_cut(conn, scratch, log_path, fold, start, every, progress)
        finally:
            scratch.close()
    finally:
        work.unlink(missing_ok=True)
    return written


def _start_work(work: Path, base: Checkpoint, fold: StoreState) -> None:
    work.unlink(missing_ok=True)
    keep_private(work)
    shutil.copyfile(base.path, work)


def _from_snapshot(conn: sqlite3.Connection, work: Path, fold: StoreState) -> Checkpoint | None:
    """An empty state to fold from, holding the compaction snapshot if the log has one;
    then the record of what that snapshot holds (None: nothing)."""
    work.unlink(missing_ok=True)
    keep_private(work)
    dst = sqlite3.connect(work, isolation_level=None)
    try:
        digest.register(dst)
        dst.execute("BEGIN")
        fold.create_tables(dst)
        dst.execute("CREATE TABLE ck_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        bases = {o: h.base for o, h in read_heads(conn).items() if h.base}
        if bases:
            load_snapshot(conn, dst, STATE_TABLES)
            fold.create_tables(dst)  # derives what the fold keeps beside the snapshot
        dst.execute("COMMIT")
    finally:
        dst.close()
    if not bases:
        return None
    top: Cut = (0, "", 0)
    hashes = {}
    for origin, base in bases.items():  # the first kept event bounds what was dropped
        raw, hlc = segments.raw_at(conn, origin, base + 1), segments.hlc_at(conn, origin, base + 1)
        assert raw is not None and hlc is not None  # compaction keeps an origin's head
        top = max(top, (hlc - 1, origin, base))
        hashes[origin] = decode_event(raw).prev.hex()
    events = sum(bases.values())
    return Checkpoint(
        work, events, bases, top, hashes, fold.version, replica_of(conn), _policy(fold),
        _revoked(conn),
    )  # fmt: skip


class _Cutter:
    """Tracks what the scratch state holds, and writes it out as a checkpoint."""

    def __init__(
        self, log_path: Path, fold: StoreState, base: Checkpoint | None, revoked: str
    ) -> None:
        self.log_path, self.fold, self.revoked = log_path, fold, revoked
        self.vv = dict(base.vv) if base else {}
        self.hashes = dict(base.hashes) if base else {}
        self.top: Cut = base.top if base else (0, "", 0)
        self.events = base.events if base else 0

    def saw(self, origin: str, seq: int, hlc: int, hash_hex: str) -> None:
        self.vv[origin], self.hashes[origin] = seq, hash_hex
        self.top = max(self.top, (hlc, origin, seq))
        self.events += 1

    def write(self, scratch: sqlite3.Connection, replica: str | None) -> Checkpoint:
        meta = {
            "events": str(self.events),
            "vv": json.dumps(self.vv, sort_keys=True),
            "top": json.dumps(list(self.top)),
            "hashes": json.dumps(self.hashes, sort_keys=True),
            "fold_version": str(self.fold.version),
            "policy": _policy(self.fold),
            "revoked": self.revoked,
            "replica": replica or "",
        }
        scratch.executemany("INSERT OR REPLACE INTO ck_meta VALUES (?, ?)", meta.items())
        scratch.execute("COMMIT")
        path = checkpoint_dir(self.log_path) / f"ck-{self.events:012d}.db"
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        keep_private(partial)
        target = sqlite3.connect(partial)
        try:
            scratch.backup(target)
        finally:
            target.close()
        partial.replace(path)
        scratch.execute("BEGIN")
        ck = _read_meta(path)
        assert ck is not None
        return ck


def _fold_and_cut(
    conn: sqlite3.Connection,
    scratch: sqlite3.Connection,
    log_path: Path,
    fold: StoreState,
    base: Checkpoint | None,
    every: int,
    progress: Progress | None,
) -> list[Checkpoint]:
    cutter = _Cutter(log_path, fold, base, _revoked(conn))
    replica = replica_of(conn)
    written: list[Checkpoint] = []
    batch: list[tuple[bytes, int]] = []
    since = 0
    scratch.execute("BEGIN")
    for raw, flags, hlc, origin, seq, hash_ in rows_after(conn, cutter.vv, None, lambda o: True):
        batch.append((raw, flags))
        cutter.saw(origin, seq, hlc, bytes(hash_).hex())
        since += 1
        if len(batch) >= _BATCH or since >= every:
            fold_rows(scratch, fold, batch, progress)
            batch = []
        if since >= every:
            written.append(cutter.write(scratch, replica))
            since = 0
    fold_rows(scratch, fold, batch, progress)
    scratch.execute("ROLLBACK")  # a tail shorter than `every` waits for the next run
    return written
