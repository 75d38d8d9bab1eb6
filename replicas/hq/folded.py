"""HQ's folded state when HQ runs on PostgreSQL: conflict's own state tables, in a
SQLite file beside HQ, folded from `hq_events` by `conflict.state.StoreState`.

Conflicts, the state digest and a sale as `GET /sales/{id}` shows it are reads of the
fold's `st_` tables (`conflict.detect`, `conflict.queries`); HQ on SQLite keeps those
tables in its log, HQ on PostgreSQL keeps this copy of them. It is the same fold over
the same set of events, so it reports the same conflicts with the same ids and the same
digest as a SQLite HQ holding those events (the fold is a function of the set, not of
the order: tests/conflict). Nothing here is a second implementation of any semantics.

It is derived data, caught up from what PostgreSQL committed (per origin, the events
past the seq read last, up to `hq_heads`): by worker 0 in the background when it is not
ingesting (`follow`, in slices, so a catch-up of millions of events never makes a read
wait for all of it), and by each read for at most READ_BUDGET events (a read right
after a batch sees it; after a large backlog, `behind` says how many events the answer
does not cover yet, shown in HQ's `/status` as `folded_behind`). Once caught up, worker
0 writes the conflicts into PostgreSQL (`hq_conflicts`, the view `bi_conflicts`), so
BI tools see them beside the figures. Rebuilt from scratch
when
the fold's version or HQ's revocations change or a key rotation evicted events (a
revoked till's events past its cut, or a retired key's, leave the state, as a SQLite
log's rebuild takes them out), and deleting the file
only costs a rebuild. Events this build cannot read (a newer schema) are stepped over,
as a SQLite log stores them unapplied.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from conflict import queries
from conflict.catalog import PricePolicy
from conflict.conflicts import Conflict
from conflict.detect import detect
from conflict.policies import from_state
from conflict.state import DEFAULT_WINDOW_MS, StoreState
from core import sqlite as core_sqlite
from core.errors import StorageError, TillmeshError
from core.events import MAX_INT64, Body, Event, decode_body, decode_event
from core.fold import Accepted
from replicas.hq.connect import connect_readonly, redact
from replicas.hq.store import PgLog

__all__ = ["FOLDED_FILE", "FoldedState", "FoldingLog"]

T = TypeVar("T")
logger = logging.getLogger(__name__)
FOLDED_FILE = "folded-state.sqlite"
CHUNK = 5_000  # events read from PostgreSQL and folded per SQLite transaction
# Events a read folds before it answers: ~1 s of folding (17 µs each); the follower
# folds the rest.
READ_BUDGET = 50_000
# Events folded per turn of the follower (~0.1 s): reads, and the check for a backlog
# that has started meanwhile, come between turns.
FOLLOW_SLICE = 5_000
FOLLOW_EVERY = 0.5  # seconds the follower waits: nothing left to fold, or the worker ingests
PUBLISH_EVERY = 5.0  # seconds at least between two writes of the conflicts (`publish`)
_META = "CREATE TABLE IF NOT EXISTS folded_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
_AT = "CREATE TABLE IF NOT EXISTS folded_at (origin TEXT PRIMARY KEY, seq INTEGER NOT NULL)"


class FoldedState:
    """`await read(fn)`: `fn(conn)` on the state, caught up first, in the state's own
    thread (one read at a time)."""

    def __init__(
        self,
        path: Path,
        dsn: str,
        price_policy: PricePolicy = "latest",
        window_ms: int = DEFAULT_WINDOW_MS,
    ) -> None:
        self.path, self.dsn, self.where = path, dsn, redact(dsn)
        self.fold = StoreState(price_policy, window_ms)
        # one thread of its own: a sqlite3 connection is used by the thread that made it
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="folded-state")
        self._conn: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        self.behind = 0  # events committed in PostgreSQL not in the state, last seen
        self._published = ""  # the state digest whose conflicts hq_conflicts holds

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._caught_up_then, fn)

    async def follow(self, busy: Callable[[], bool] = lambda: False) -> None:
        """Fold what PostgreSQL commits while `busy()` is false (the worker is not taking
        in a backlog), a slice per turn of the state's thread (reads queued meanwhile run
        between slices), and publish the conflicts once caught up (`publish`); runs
        until cancelled. The fold shares the worker's interpreter, and a backlog's ingest
        comes first: meanwhile, each read folds its own budget."""
        loop = asyncio.get_running_loop()
        published = -PUBLISH_EVERY
        while True:
            if busy():
                await asyncio.sleep(FOLLOW_EVERY)
                continue
            try:
                await loop.run_in_executor(self._thread, self.catch_up, FOLLOW_SLICE)
                if not self.behind and time.monotonic() - published >= PUBLISH_EVERY:
                    await loop.run_in_executor(self._thread, self.publish)
                    published = time.monotonic()
            except StorageError:  # the database is away: the next turn tries again
                logger.warning("folding HQ's state: %s is unavailable", self.where)
                await asyncio.sleep(FOLLOW_EVERY)
                continue
            if not self.behind:
                await asyncio.sleep(FOLLOW_EVERY)

    def publish(self) -> None:
        """Write the fold's conflicts into `hq_conflicts` (for BI tools and SQL) if the
        state changed since they were last written (its digest says). In the state's
        thread; one transaction, so a reader sees one state's list or the one before."""
        conn = self._state()
        digest = queries.state_digest(conn)
        if digest == self._published:
            return
        rows = [_conflict_row(c) for c in detect(conn, from_state(conn))]
        try:
            with psycopg.connect(self.dsn, autocommit=True) as pg, pg.transaction():
                pg.execute("DELETE FROM hq_conflicts")
                pg.cursor().executemany(
                    "INSERT INTO hq_conflicts VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows
                )
                pg.execute(
                    "INSERT INTO hq_conflicts_at VALUES (1, %s, now()) ON CONFLICT (one)"
                    " DO UPDATE SET digest = excluded.digest, published_at = now()",
                    (digest,),
                )
        except psycopg.Error as e:
            raise StorageError(self.where, str(e).strip()) from e
        self._published = digest

    def _caught_up_then(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self.catch_up(READ_BUDGET)
        return fn(conn)

    def catch_up(self, budget: int | None = None) -> sqlite3.Connection:
        """Fold what PostgreSQL committed since the last call, at most `budget` events
        (None: all); returns the state. Called in the state's thread (`read`, `follow`),
        or by a caller that never uses those."""
        conn = self._state()
        try:
            pg = self._database()
            heads, revoked, evictions = _committed(pg)
            self._rebuild_if_stale(conn, revoked, evictions)
            at = dict(conn.execute("SELECT origin, seq FROM folded_at"))
            left = MAX_INT64 if budget is None else budget
            for origin, head in sorted(heads.items()):
                after = at.get(origin, 0)
                if head > after and left > 0:
                    upto = min(head, after + left)
                    self._fold_origin(conn, pg, origin, after, upto, revoked)
                    left -= upto - after
                    at[origin] = upto
            self.behind = sum(max(0, head - at.get(o, 0)) for o, head in heads.items())
        except psycopg.Error as e:
            self._drop_database()
            raise StorageError(self.where, str(e).strip()) from e
        return conn

    def close(self) -> None:
        """Close both connections (in the state's thread), then that thread."""
        self._thread.submit(self._close).result()
        self._thread.shutdown()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._drop_database()

    # --- folding ----------------------------------------------------------------------

    def _fold_origin(
        self, conn: sqlite3.Connection, pg: psycopg.Connection[Any], origin: str,
        after: int, head: int, revoked: dict[str, int],
    ) -> None:  # fmt: skip
        """`origin`'s events in (after, head], in chunks; past a revocation's cut none."""
        upto = min(head, revoked.get(origin, MAX_INT64))
        for seq, batch in _chunks(pg, origin, after, upto):
            with _transaction(conn):
                self.fold.apply(conn, batch)
                _mark(conn, origin, seq)
        if upto < head:  # the rest is revoked: read past it, never state
            with _transaction(conn):
                _mark(conn, origin, head)

    def _rebuild_if_stale(
        self, conn: sqlite3.Connection, revoked: dict[str, int], evictions: str
    ) -> None:
        want = {"fold_version": str(self.fold.version), "source": self.where,
                "revoked": json.dumps(revoked, sort_keys=True),
                "evictions": evictions}  # fmt: skip
        have = dict(conn.execute("SELECT key, value FROM folded_meta"))
        if have == want:
            return
        with _transaction(conn):
            self.fold.drop_tables(conn)
            conn.execute("DELETE FROM folded_at")
            self.fold.create_tables(conn)
            conn.execute("DELETE FROM folded_meta")
            conn.executemany("INSERT INTO folded_meta VALUES (?, ?)", list(want.items()))

    # --- connections ------------------------------------------------------------------

    def _state(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = core_sqlite.open_sync(self.path)
            conn.execute(_META)
            conn.execute(_AT)
            with _transaction(conn):
                self.fold.create_tables(conn)
            self._conn = conn
        return self._conn

    def _database(self) -> psycopg.Connection[Any]:
        if self._pg is None or self._pg.closed:
            self._pg = connect_readonly(self.dsn, autocommit=True)
        return self._pg

    def _drop_database(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None


class FoldingLog:
    """What resolving conflicts needs of a log (`conflict.resolve.ResolvingLog`, the
    conflicts router): reads of the folded state, appends by HQ's PostgreSQL store."""

    def __init__(self, state: FoldedState, log: PgLog) -> None:
        self.state, self.log = state, log

    @property
    def replica_id(self) -> str:
        return self.log.replica_id

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self.state.read(fn)

    async def append_many(self, bodies: Sequence[Body]) -> list[Event]:
        return await self.log.append_many(bodies)


def _committed(pg: psycopg.Connection[Any]) -> tuple[dict[str, int], dict[str, int], str]:
    """Heads, revocations and evictions in one snapshot: events up to a head are all
    committed. A rotation may have evicted events folded already (`rotation.py` counts
    them in hq_meta): rebuilt then."""
    with pg.transaction():
        pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        heads = {str(o): int(s) for o, s in pg.execute("SELECT origin, seq FROM hq_heads")}
        meta = dict(
            pg.execute("SELECT key, value FROM hq_meta WHERE key IN ('revoked', 'evictions')")
        )
    revoked = {str(k): int(v) for k, v in json.loads(meta.get("revoked", "{}")).items()}
    return heads, revoked, str(meta.get("evictions", "0"))


def _chunks(
    pg: psycopg.Connection[Any], origin: str, after: int, upto: int
) -> Iterator[tuple[int, list[Accepted]]]:
    """(last seq read, the readable events among them), CHUNK events at a time."""
    store = origin.partition("/")[0]
    while after < upto:
        rows = pg.execute(
            "SELECT seq, raw FROM hq_events WHERE store = %s AND origin = %s"
            " AND seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
            (store, origin, after, upto, CHUNK),
        ).fetchall()
        if not rows:
            return
        after = int(rows[-1][0])
        yield after, _readable([bytes(raw) for _, raw in rows])


def _readable(raws: Sequence[bytes]) -> list[Accepted]:
    """The events whose body this build reads, decoded as a SQLite log's rebuild decodes
    its stored events (`check_text=False`: they were checked when HQ took them in)."""
    out = []
    for raw in raws:
        ev: Event = decode_event(raw)
        try:
            body = decode_body(ev, check_text=False)
        except TillmeshError:  # a type or schema newer than this build: stored unapplied
            continue
        out.append(Accepted(ev, body))
    return out


def _conflict_row(c: Conflict) -> tuple[object, ...]:
    """A row of hq_conflicts: the conflict as `GET /conflicts` lists it."""
    resolution = None if c.resolution is None else Jsonb(msgspec.to_builtins(c.resolution))
    return (c.id, c.kind, c.subject, c.store, c.is_open, Jsonb(c.events),
            Jsonb(msgspec.to_builtins(c.details)), resolution)  # fmt: skip


def _mark(conn: sqlite3.Connection, origin: str, seq: int) -> None:
    conn.execute("INSERT OR REPLACE INTO folded_at VALUES (?, ?)", (origin, seq))


class _transaction:
    """BEGIN ... COMMIT on an autocommit sqlite3 connection, ROLLBACK on error."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
