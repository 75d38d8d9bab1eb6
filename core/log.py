"""The durable event log of one replica, on SQLite (WAL, synchronous=FULL).

One writer task owns the write connection and commits in groups: every request
queued while the previous transaction was being made durable goes into the next
one, so under load many sales share one fsync, and `append()` returns only after
its event is on disk. Reads use a second connection (WAL lets them run beside
the writer).

Guarantees:
- local events get contiguous seqs from 1, an HLC timestamp and the hash of the
  previous event (a per-origin hash chain);
- ingest is idempotent: the same (origin, seq) again is a no-op; different bytes
  for a stored (origin, seq) are equivocation, kept in quarantine as evidence;
- an event whose predecessor is missing is held, not applied, until the gap fills,
  so the version vector always means "everything up to seq, contiguously";
- the event, the state change the fold derives from it and the version vector
  commit in one transaction.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiosqlite

from core import segments
from core.batch import ClockAhead, IngestResult, Transaction
from core.checks import NO_HEAD, CheckedEvent, Head, check_events_in_turns
from core.clock import HybridClock, system_wall_ms
from core.compact import readable_unapplied, rebuild_state, stale_snapshot
from core.errors import StorageError
from core.events import Body, Event, LogSigned, RawEvent, decode_raws, encode_body
from core.fold import StateFold
from core.keys import KeyRegistry
from core.observe import CommitObserver, CommitStats, commit_stats
from core.rotation import (
    UNVERIFIED_TABLE,
    Rotations,
    load_checkpoints,
    load_rotations,
    with_checkpoints,
    with_rotations,
)
from core.schema import MIGRATIONS
from core.signing import Signer, Verifier
from core.sqlite import connect, migrate, run_in_thread
from core.stats import LogStats, read_stats
from core.walcheck import WalCheckpointer
from core.worker_checks import WorkerChecker

__all__ = [
    "ClockAhead",
    "CommitObserver",
    "CommitStats",
    "EventLog",
    "IngestResult",
    "Listener",
    "LogStats",
    "read_stats",
]

logger = logging.getLogger(__name__)
# Told of the new events of every commit, with their stored bytes, on the writer task.
Listener = Callable[[list[RawEvent]], None]

T = TypeVar("T")
MAX_BATCH_EVENTS = 5000
# The writer idle this long: the fold's held-back work, a slice at a time (`_settle`)
SETTLE_WHEN_IDLE_S = 0.5
# ... and a slice at least this often while requests keep it busy (a till never idle
# for SETTLE_WHEN_IDLE_S would otherwise never settle)
SETTLE_WHILE_BUSY_S = 1.0
REBUILD_CHUNK = 5000


@dataclass
class _Request:
    future: asyncio.Future[object]
    appends: list[tuple[Body, str, bytes]] = field(default_factory=list)
    ingest: list[CheckedEvent] = field(default_factory=list)
    peer: str = ""
    switch: tuple[Signer, Callable[[int], object]] | None = None  # see switch_signer

    @property
    def size(self) -> int:
        return len(self.appends) + len(self.ingest)


class EventLog:
    """Open with `await EventLog.open(...)`; use as `async with`."""

    def __init__(
        self,
        path: Path,
        replica_id: str,
        fold: StateFold,
        clock: HybridClock,
        in_scope: Callable[[str], bool],
        wall_ms: Callable[[], int],
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        timer: Callable[[], float] = time.perf_counter,
        check_in_worker: bool = False,
    ) -> None:
        self.path = path
        # Big frames checked in a worker process, on another core than the writer
        # (core.worker_checks); the replica turns it on, tools and tests need not.
        self._worker = WorkerChecker() if check_in_worker else None
        self.timer = timer  # times commits for `commit_observers`
        self.signer = signer  # signs our own events (core.signing)
        self.verifier = verifier  # checks others': None trusts every peer (tests, tools)
        self.replica_id = replica_id
        self.fold = fold
        self.clock = clock
        self.in_scope = in_scope
        self.wall_ms = wall_ms
        self._heads: dict[str, Head] = {}
        self._pending_origins: set[str] = set()
        self._bases: dict[str, int] = {}  # compacted away: seqs <= base (set offline)
        self._revoked: dict[str, int] = {}  # origin -> last seq before HQ revoked it
        self._rotations: Rotations = {}  # origin -> (from_seq, key) HQ rotated (core.rotation)
        self._checkpoints: dict[str, int] = {}  # origin -> seq of its log.signed (core.keys)
        # origin -> why the compaction snapshot holds events no longer state (core.compact)
        self.stale_snapshot: dict[str, str] = {}
        self._queue: asyncio.Queue[_Request | None] = asyncio.Queue()
        self._ingest_order = asyncio.Lock()
        self._writer_conn: aiosqlite.Connection | None = None
        self._reader_conn: aiosqlite.Connection | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._unsettled = True  # the fold may hold work back (`StateFold.settle`)
        self._settled_at = timer()  # the last slice of it
        self._wal = WalCheckpointer(path)  # checkpoints off the writer's thread
        self.listeners: list[Listener] = []
        self.commit_observers: list[CommitObserver] = []
        # Since opening: per origin, events received too far ahead of our clock and the
        # newest such HLC. An observation of this replica (status shows it), not state.
        self.clock_ahead: dict[str, ClockAhead] = {}

    # --- lifecycle ---------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        replica_id: str,
        fold: StateFold,
        *,
        clock: HybridClock | None = None,
        in_scope: Callable[[str], bool] = lambda origin: True,
        wall_ms: Callable[[], int] = system_wall_ms,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        timer: Callable[[], float] = time.perf_counter,
        check_in_worker: bool = False,
    ) -> EventLog:
        clock = clock or HybridClock(wall_ms)
        log = cls(
            Path(path), replica_id, fold, clock, in_scope, wall_ms, signer, verifier, timer,
            check_in_worker,
        )  # fmt: skip
        await log._start()
        return log

    async def _start(self) -> None:
        self._writer_conn = await connect(self.path)
        try:
            await run_in_thread(self._writer_conn, self._prepare, self.path)
        except BaseException:
            await self._writer_conn.close()
            raise
        self._reader_conn = await connect(self.path, readonly=True)
        await self._wal.open()
        self._writer_task = asyncio.create_task(self._write_loop(), name=f"log-writer {self.path}")

    def _prepare(self, conn: sqlite3.Connection) -> None:
        """Migrate, claim or check the replica id, load heads, rebuild state if stale."""
        migrate(conn, str(self.path), MIGRATIONS)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        owner = meta.get("replica_id")
        if owner is not None and owner != self.replica_id:
            detail = f"belongs to replica {owner!r}, not {self.replica_id!r}"
            raise StorageError(str(self.path), detail)
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('replica_id', ?)", (self.replica_id,))
        self.clock.last = max(self.clock.last, int(meta.get("hlc", 0)))
        for origin, seq, h, base in conn.execute("SELECT origin, seq, hash, base FROM heads"):
            self._heads[origin] = (seq, h)
            if base:
                self._bases[origin] = base
        self._pending_origins = {o for (o,) in conn.execute("SELECT DISTINCT origin FROM pending")}
        self._revoked = {str(o): int(n) for o, n in json.loads(meta.get("revoked", "{}")).items()}
        conn.execute(UNVERIFIED_TABLE)
        self._rotations = load_rotations(meta)
        self._checkpoints = load_checkpoints(meta)
        self.stale_snapshot = stale_snapshot(conn)
        if isinstance(self.verifier, KeyRegistry):  # the site's keys, then HQ's rotations
            self.verifier = with_rotations(self.verifier, self._rotations)
            self.verifier = with_checkpoints(self.verifier, self._checkpoints)
        # A new build may read events an older one stored unapplied (a newer schema):
        # it folds them in, or this till's state would lag its peers' until a rebuild.
        # Checked at every open, since a build rolled back and forward again may have
        # stored some in between; `event_flags` (core.segments) makes that a lookup.
        if meta.get("fold_version") != self.fold.version or readable_unapplied(conn):
            self._rebuild(conn)

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        await self._wal.close()
        for conn in (self._reader_conn, self._writer_conn):
            if conn is not None:
                await conn.close()
        self._reader_conn = self._writer_conn = None
        if self._worker is not None:
            await self._worker.close()

    async def __aenter__(self) -> EventLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- writes ------------------------------------------------------------------

    async def append(self, body: Body) -> Event:
        """Append a local event; returns once it is durable."""
        return (await self.append_many([body]))[0]

    async def append_many(self, bodies: Sequence[Body]) -> list[Event]:
        """Append local events atomically (one transaction), in order."""
        appends = [(body, *encode_body(body)) for body in bodies]  # validates before queueing
        events = await self._submit(_Request(self._new_future(), appends=appends))
        assert isinstance(events, list)
        return events

    async def ingest(self, events: Sequence[Event | RawEvent], peer: str = "") -> IngestResult:
        """Store remote events idempotently; returns what was accepted, held or refused.

        Hashes, canonical bytes and bodies are checked here, in the caller's thread and
        in slices, so the writer's group commit (which queued sales wait for) holds
        only what needs the log.
        """
        # In call order: a small frame handed in after a big one must not overtake it
        # while the big one is being checked, or its events would land behind a gap
        # (held) and the sync engine would judge an honest peer's reply short.
        async with self._ingest_order:
            checked = await self._check(events)
            request = _Request(self._new_future(), ingest=checked, peer=peer)
            self._queue_request(request)
        result = await request.future
        assert isinstance(result, IngestResult)
        return result

    async def _check(self, events: Sequence[Event | RawEvent]) -> list[CheckedEvent]:
        worker, verifier = self._worker, self.verifier
        if worker is not None and worker.usable(events, verifier):
            assert verifier is None or isinstance(verifier, KeyRegistry)  # usable() says so
            found = await worker.check(events, self._heads, verifier)  # type: ignore[arg-type]
            if found is not None:
                return found
        return await check_events_in_turns(events, self._heads, self.verifier)

    async def ingest_raw(self, raws: Sequence[bytes], peer: str = "") -> IngestResult:
        """Like `ingest`, from envelope bytes; bytes that are no envelope are refused."""
        events, refused = decode_raws(raws)
        result = await self.ingest(events, peer)
        result.rejected.extend(refused)
        return result

    async def switch_signer(self, signer: Signer, persist: Callable[[int], object]) -> int:
        """Sign our events with `signer` from the next seq on; returns that seq. Done
        between two of our events, in the writer: `persist(seq)` (which makes the new
        key durable, with the seq it starts at) runs before any event is signed with it,
        so a crash leaves the log and the key file agreeing."""
        from_seq = await self._submit(_Request(self._new_future(), switch=(signer, persist)))
        assert isinstance(from_seq, int)
        return from_seq

    async def sign_history(self) -> Event | None:
        """Our `log.signed` checkpoint (`core.bodies.LogSigned`), unless this log holds it:
        the first event we sign after a history written unsigned (a site from before
        signing). Its signature covers that history, through the chain, on every replica
        that holds it, signed here or not: those events' bytes and hashes stay as they
        are. From it on, replicas refuse our unsigned events (`core.keys`)."""
        if self.signer is None or self.replica_id in self._checkpoints:
            return None
        return await self.append(LogSigned(unsigned=self.head(self.replica_id)[0]))

    def _new_future(self) -> asyncio.Future[object]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, request: _Request) -> object:
        self._queue_request(request)
        return await request.future

    def _queue_request(self, request: _Request) -> None:
        if self._writer_task is None or self._writer_task.done():
            raise StorageError(str(self.path), "log is closed")
        self._queue.put_nowait(request)  # unbounded: never blocks

    async def _write_loop(self) -> None:
        while True:
            first = await self._next_request()
            if first is None:
                return
            batch, size = [first], first.size
            while not self._queue.empty() and size < MAX_BATCH_EVENTS:
                nxt = self._queue.get_nowait()
                if nxt is None:
                    await self._commit(batch)
                    return
                batch.append(nxt)
                size += nxt.size
            await self._commit(batch)

    async def _next_request(self) -> _Request | None:
        """The next request. Once none has come for SETTLE_WHEN_IDLE_S, the work the fold
        held back, a slice per transaction until a request comes: that request waits for
        one slice at most, instead of doing the work itself (a sale of a held SKU); and one
        slice every SETTLE_WHILE_BUSY_S between requests that never leave it idle."""
        while self._unsettled:
            if self.timer() - self._settled_at >= SETTLE_WHILE_BUSY_S:
                self._unsettled = await self._settle()
                continue
            try:
                return await asyncio.wait_for(self._queue.get(), SETTLE_WHEN_IDLE_S)
            except TimeoutError:
                pass
            while self._unsettled and self._queue.empty():
                self._unsettled = await self._settle()
        return await self._queue.get()

    async def _settle(self) -> bool:
        assert self._writer_conn is not None
        self._settled_at = self.timer()
        try:
            return await run_in_thread(self._writer_conn, self._settle_tx, self.path)
        except Exception:  # the writer must outlive it: every later sale needs the writer
            logger.exception("%s: settling the fold's held-back work failed", self.path)
            return False

    def _settle_tx(self, conn: sqlite3.Connection) -> bool:
        conn.execute("BEGIN")  # deferred: nothing held back, no write lock taken
        try:
            more = self.fold.settle(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return more

    async def _commit(self, batch: list[_Request]) -> None:
        assert self._writer_conn is not None
        started = self.timer()
        try:
            results, staged = await run_in_thread(
                self._writer_conn, lambda c: self._transaction(c, batch), self.path
            )
        except BaseException as e:  # the whole group failed: tell every waiter
            for req in batch:
                if not req.future.done():
                    req.future.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        self._heads.update(staged)
        self._wal.committed()
        self._unsettled = True  # an ingest, or an append of a catch-up's size, may hold
        seconds = self.timer() - started
        new_events: list[RawEvent] = []
        if len(results) > len(batch):  # events released by a rotation, no request's
            released = results.pop()
            assert isinstance(released, IngestResult)
            new_events.extend(released.stored)
        for req, res in zip(batch, results, strict=True):
            if isinstance(res, IngestResult):
                new_events.extend(res.stored)
                self._note_clock_ahead(res.clock_ahead)
                req.future.set_result(res)
            elif isinstance(res, int):  # a signer switched: the seq it signs from
                req.future.set_result(res)
            else:
                assert isinstance(res, list)
                new_events.extend(res)
                req.future.set_result([s.event for s in res])
        self._notify(new_events)
        if self.commit_observers:
            done = [(r.peer, len(r.appends), res) for r, res in zip(batch, results, strict=True)]
            self._observe(commit_stats(done, seconds))

    def _note_clock_ahead(self, seen: dict[str, ClockAhead]) -> None:
        for origin, ahead in seen.items():
            self.clock_ahead[origin] = ahead.plus(self.clock_ahead.get(origin))

    def _notify(self, events: list[RawEvent]) -> None:
        """Tell each listener; one that raises is logged and the others still hear,
        since the writer task must outlive any listener (or every later sale fails)."""
        if events:
            for listener in list(self.listeners):
                try:
                    listener(events)
                except Exception:
                    logger.exception("log listener %r failed", listener)

    def _observe(self, stats: CommitStats) -> None:
        for observer in list(self.commit_observers):  # like listeners: one failing is logged
            try:
                observer(stats)
            except Exception:
                logger.exception("commit observer %r failed", observer)

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[_Request]
    ) -> tuple[list[object], dict[str, Head]]:
        tx = Transaction(
            conn,
            self._heads,
            self.fold,
            self.clock,
            self.in_scope,
            self._pending_origins,
            self.wall_ms,
            self.signer,
            self.verifier,
            revoked=dict(self._revoked),
            rotations={o: list(steps) for o, steps in self._rotations.items()},
            checkpoints=dict(self._checkpoints),
        )
        conn.execute("BEGIN IMMEDIATE")
        try:
            results: list[object] = []
            for req in batch:
                if req.switch is not None:
                    signer, persist = req.switch
                    from_seq = tx.head(self.replica_id)[0] + 1
                    persist(from_seq)
                    tx.signer = signer
                    results.append(from_seq)
                elif req.appends:
                    results.append(
                        [tx.append_local(self.replica_id, b, t, d) for b, t, d in req.appends]
                    )
                else:
                    result = IngestResult()
                    tx.ingest(req.ingest, req.peer, result)
                    results.append(result)
            tx.write()
            if tx.needs_rebuild:  # a revocation reached folded events: rare, and whole
                self._rebuild(conn)
            stale = stale_snapshot(conn) if tx.stale_marked else self.stale_snapshot
            conn.execute("COMMIT")
            self._revoked = tx.revoked
            self._rotations, self.verifier = tx.rotations, tx.verifier
            self._checkpoints = tx.checkpoints
            self.signer = tx.signer
            if stale != self.stale_snapshot:
                logger.error("%s: %s", self.path, "; ".join(stale.values()))
                self.stale_snapshot = stale
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if tx.released.stored:  # held for a key HQ rotated in this commit: heard with it
            results.append(tx.released)
        return results, tx.staged

    # --- rebuild -----------------------------------------------------------------

    async def rebuild(self) -> int:
        """Drop and re-derive all state from the events; returns events applied."""
        assert self._writer_conn is not None
        return await run_in_thread(self._writer_conn, self._rebuild_tx, self.path)

    def _rebuild_tx(self, conn: sqlite3.Connection) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = self._rebuild(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return n

    def _rebuild(self, conn: sqlite3.Connection) -> int:
        # A compacted log re-derives from its snapshot plus the events it still holds.
        return rebuild_state(conn, self.fold, self.fold.tables)

    # --- reads -------------------------------------------------------------------

    def version_vector(self) -> dict[str, int]:
        return {origin: seq for origin, (seq, _) in self._heads.items()}

    def head(self, origin: str) -> Head:
        return self._heads.get(origin, NO_HEAD)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` on the read connection's thread (a consistent WAL snapshot)."""
        assert self._reader_conn is not None

        def in_tx(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")
            try:
                return fn(conn)
            finally:
                conn.execute("COMMIT")

        return await run_in_thread(self._reader_conn, in_tx, self.path)

    async def read_range(self, origin: str, from_seq: int, limit: int) -> list[bytes]:
        """Envelope bytes of `origin`'s events from `from_seq`, at most `limit` of them.

        Empty if `from_seq` was compacted away: a range with a hole at its start would
        only be held by the asker; an empty answer sends it to a peer (HQ) that has it.
        """
        if from_seq <= self._bases.get(origin, 0):
            return []

        return await self.read(lambda conn: segments.read_raws(conn, origin, from_seq, limit))

    async def stats(self) -> LogStats:
        """For status polls: the event count comes from the heads, not a table scan."""
        return await self.read(lambda conn: read_stats(conn, self.path, exact=False))
