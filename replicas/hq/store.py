"""HQ's event store and read model on PostgreSQL: `PgLog`, what sync needs of a log.

One ingest call is one transaction: the batch's events are COPYed into `hq_events`
(binary COPY; each origin's new seqs, past the head this worker moved: `_write_events`),
beside the read model's rows (COPY into the fact tables), the held and quarantined events and
the new chain heads. The heads are updated only from the values this process read
(`WHERE seq = <old>`): if another worker wrote the same origin meanwhile (two workers
given one store by mistake), the transaction is rolled back and the heads reloaded,
so no event or fact is ever written twice. A worker restarted after SIGKILL starts
from the heads of its last commit: the database's version vector.

`owns(origin)` is the worker's share (`shard.py`): events of other origins are
refused as out of scope, like a till refuses another store's.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.string import BytesBinaryDumper

from conflict.catalog import PricePolicy
from conflict.state import DEFAULT_WINDOW_MS
from core.batch import IngestResult
from core.checks import NO_HEAD, Head, check_events_in_turns
from core.clock import HybridClock, system_wall_ms
from core.errors import StorageError
from core.events import (
    Body,
    Event,
    RawEvent,
    decode_raws,
    encode_body,
    encode_event,
    event_hash,
)
from core.keys import KeyRegistry
from core.log import Listener
from core.observe import CommitObserver, commit_stats
from core.rotation import Rotations, load_rotations, with_checkpoints, with_rotations
from core.signing import Signer, Verifier
from core.stats import LogStats
from replicas.hq.admit import Admission
from replicas.hq.catalog import refresh_products, touched_skus
from replicas.hq.connect import NO_JIT, redact, with_options
from replicas.hq.project import FACT_COLUMNS, FACT_TYPES, Facts
from replicas.hq.reads import pending_rows, read_checkpoints, read_meta, stored_hashes
from replicas.hq.rotation import (
    apply_checkpoints,
    apply_rotations,
    changed_origins,
    revoke,
    store_rotations,
)
from replicas.hq.schema import migrate
from replicas.hq.upgrade import apply_readable

__all__ = ["PgLog"]

logger = logging.getLogger(__name__)
OWNS_CACHE = 65_536  # origins whose share is remembered (bounded: origins come from peers)
REVOKE_LOCK = 0x7E11_4D36  # advisory lock: batches shared, a revocation exclusive
EVENT_COLUMNS = ("store", "origin", "seq", "hlc", "type", "flags", "hash", "raw")
EVENT_TYPES = ("text", "text", "int8", "int8", "text", "int4", "bytea", "bytea")


class PgLog:
    """Open with `await PgLog.open(dsn, ...)`; `async with` closes it."""

    def __init__(
        self,
        conn: AsyncConnection[Any],
        reader: AsyncConnection[Any],
        where: str,
        replica_id: str,
        owns: Callable[[str], bool],
        clock: HybridClock,
        wall_ms: Callable[[], int],
        signer: Signer | None,
        verifier: Verifier | None,
        price_policy: PricePolicy,
        window_ms: int,
    ) -> None:
        self.conn, self.reader = conn, reader  # the writer's, and one for serving reads
        self.where, self.replica_id = where, replica_id
        # asked per event; a pure function of the origin (`shard.py`): ~0.55 us to ~0.04
        self.owns = functools.lru_cache(maxsize=OWNS_CACHE)(owns)
        self.clock, self.wall_ms = clock, wall_ms
        self.signer, self.verifier = signer, verifier
        self.price_policy, self.window_ms = price_policy, window_ms
        self._heads: dict[str, Head] = {}
        self._pending_origins: set[str] = set()
        self._shared: dict[str, int] = {}  # heads of origins served here, written by another
        self._order = asyncio.Lock()  # checks run in call order...
        self._write = asyncio.Lock()  # ...and so do the transactions after them
        self._read = asyncio.Lock()
        self.listeners: list[Listener] = []
        self.commit_observers: list[CommitObserver] = []  # as EventLog's: metrics
        self.clock_ahead: dict[str, Any] = {}
        self.site_keys = verifier  # the site's keys; HQ's rotations (hq_meta) go on top
        self.rotations: Rotations = {}
        self.checkpoints: dict[str, int] = {}  # its tills' log.signed seqs (core.keys)

    @classmethod
    async def open(
        cls,
        dsn: str,
        replica_id: str = "hq",
        *,
        owns: Callable[[str], bool] = lambda origin: True,
        clock: HybridClock | None = None,
        wall_ms: Callable[[], int] = system_wall_ms,
        signer: Signer | None = None,
        verifier: Verifier | None = None,
        price_policy: PricePolicy = "latest",
        window_ms: int = DEFAULT_WINDOW_MS,
    ) -> PgLog:
        where = redact(dsn)
        try:
            with psycopg.connect(dsn) as sync_conn:
                migrate(sync_conn, where)
                sync_conn.execute(  # what `tillmesh conflicts` on the database folds by
                    "INSERT INTO hq_meta VALUES ('price_policy', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (f"{price_policy}/{window_ms}",),
                )
            conn = await AsyncConnection.connect(dsn, autocommit=True)
            # COPY dumps bytea by type: psycopg's default for it is a Python subclass
            # (dbapi20's, for its `Binary` wrapper); the plain one is C (~1 us/event less)
            conn.adapters.register_dumper(bytes, BytesBinaryDumper)
            reader = await AsyncConnection.connect(
                dsn, autocommit=True, options=with_options(dsn, NO_JIT)
            )
        except psycopg.Error as e:
            raise StorageError(where, str(e).strip()) from e
        log = cls(conn, reader, where, replica_id, owns, clock or HybridClock(wall_ms), wall_ms,
                  signer, verifier, price_policy, window_ms)  # fmt: skip
        try:
            await log._load()
            await log._apply_stored()
        except psycopg.Error as e:
            await log.close()
            raise StorageError(where, str(e).strip()) from e
        return log

    async def _load(self) -> None:
        async with self.conn.transaction():
            cur = await self.conn.execute("SELECT origin, seq, hash, last_hlc FROM hq_heads")
            self._heads = {}
            for origin, seq, h, last_hlc in await cur.fetchall():
                if self.owns(origin):
                    self._heads[origin] = (int(seq), bytes(h))
                    self.clock.last = max(self.clock.last, int(last_hlc))
            cur = await self.conn.execute("SELECT DISTINCT origin FROM hq_pending")
            self._pending_origins = {o for (o,) in await cur.fetchall() if self.owns(o)}
            self.checkpoints = await read_checkpoints(self.conn, self.owns)
            # checked with HQ's rotations from now on; `rotations` stays what this process
            # applied (evictions, held events released), so the next batch applies the rest
            self._learn(load_rotations(await read_meta(self.conn)), self.rotations)

    def _learn(self, rotations: Rotations, applied: Rotations) -> None:
        """Check with `rotations` (the site's keys, then these); `applied`: those whose
        evictions and releases this worker made (`rotation.py`)."""
        self.rotations = applied
        self.verifier = self._keys(rotations)

    def _keys(self, rotations: Rotations) -> Verifier | None:
        """The site's keys, HQ's `rotations` and the checkpoints known here, in force."""
        if not isinstance(self.site_keys, KeyRegistry):
            return self.verifier
        return with_checkpoints(with_rotations(self.site_keys, rotations), self.checkpoints)

    async def refresh_keys(self) -> bool:
        """Apply the rotations another worker took in since this one's last batch (its
        tills' held events released, a retired key's evicted), in a batch of no events;
        whether there were any. Worker K > 0 calls it beside `refresh_shared`."""
        async with self._read:
            meta = await read_meta(self.reader)
        if load_rotations(meta) == self.rotations:
            return False
        await self.ingest([])
        return True

    async def close(self) -> None:
        async with self._write, self._read:
            await self.conn.close()
            await self.reader.close()

    async def __aenter__(self) -> PgLog:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- what sync reads -------------------------------------------------------------

    def version_vector(self) -> dict[str, int]:
        return {origin: seq for origin, (seq, _) in self._heads.items()}

    def head(self, origin: str) -> Head:
        return self._heads.get(origin, NO_HEAD)

    def served_vv(self) -> dict[str, int]:
        """What pulls are answered from: this worker's chains and the shared ones."""
        return {**self._shared, **self.version_vector()}

    async def refresh_shared(self, origins: Sequence[str]) -> None:
        """Read the heads of `origins` (served here, written by another worker)."""
        async with self._read:
            cur = await self.reader.execute(
                "SELECT origin, seq FROM hq_heads WHERE origin = ANY(%s)", (list(origins),)
            )
            self._shared = {o: int(s) for o, s in await cur.fetchall()}

    async def events(self) -> int:
        """Events stored, from the heads (every chain is contiguous from 1)."""
        async with self._read:
            cur = await self.reader.execute("SELECT COALESCE(SUM(seq), 0)::int8 FROM hq_heads")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def read_range(self, origin: str, from_seq: int, limit: int) -> list[bytes]:
        async with self._read:  # its own connection: serving never waits for an ingest
            cur = await self.reader.execute(
                "SELECT raw FROM hq_events WHERE store = %s AND origin = %s AND seq >= %s"
                " ORDER BY seq LIMIT %s",
                (origin.partition("/")[0], origin, from_seq, limit),
            )
            rows = await cur.fetchall()
        return [bytes(r) for (r,) in rows]

    # --- writes --------------------------------------------------------------------

    async def ingest(self, events: Sequence[Event | RawEvent], peer: str = "") -> IngestResult:
        """Checked in call order (`_order`), then written in that order: the next batch
        is checked (Python, signatures) while this one's transaction runs in PostgreSQL,
        so two frames in flight (sync reads one ahead) keep both busy."""
        async with self._order:
            checked = await check_events_in_turns(events, self._heads, self.verifier)
            await self._write.acquire()  # FIFO: batches are written in the order checked
        try:
            result, t0 = IngestResult(), time.perf_counter()
            adm = await self._commit(lambda a, pend: a.ingest(checked, peer, result, pend), result)
            self._after_commit(adm, result.stored)  # heads moved before the next batch reads
        finally:
            self._write.release()
        self._observe([(peer, 0, result)], time.perf_counter() - t0)
        return result

    async def ingest_raw(self, raws: Sequence[bytes], peer: str = "") -> IngestResult:
        events, refused = decode_raws(raws)
        result = await self.ingest(events, peer)
        result.rejected.extend(refused)
        return result

    async def append(self, body: Body) -> Event:
        return (await self.append_many([body]))[0]

    async def append_many(self, bodies: Sequence[Body]) -> list[Event]:
        """HQ's own events (catalog, prices, revocations), signed; the worker that owns
        HQ's origin writes them."""
        encoded = [(body, *encode_body(body)) for body in bodies]
        made: list[RawEvent] = []

        def author(adm: Admission, _: object) -> None:
            for body, event_type, data in encoded:
                seq, prev = adm.head(self.replica_id)
                ev = Event(self.replica_id, seq + 1, self.clock.now(), body.min_schema(),
                           event_type, data, prev)  # fmt: skip
                h = event_hash(ev)
                if self.signer is not None:
                    ev = msgspec.structs.replace(ev, sig=self.signer.sign(h))
                raw = encode_event(ev)
                adm.accept(ev, h, raw, body, 0)
                made.append(RawEvent(ev, raw))

        async with self._write:
            t0 = time.perf_counter()
            adm = await self._commit(author, IngestResult())
            self._after_commit(adm, made)
        self._observe([("", len(made), made)], time.perf_counter() - t0)
        return [m.event for m in made]

    def _observe(self, done: list[tuple[str, int, object]], seconds: float) -> None:
        if self.commit_observers:
            stats = commit_stats(done, seconds)
            for observer in list(self.commit_observers):
                try:
                    observer(stats)
                except Exception:
                    logger.exception("commit observer %r failed", observer)

    async def stats(self) -> LogStats:
        """Counts and the version vector of the whole database, as `EventLog.stats`."""
        async with self._read:
            cur = await self.reader.execute(
                "SELECT (SELECT COALESCE(SUM(seq), 0)::int8 FROM hq_heads),"
                " (SELECT count(*) FROM hq_pending), (SELECT count(*) FROM hq_quarantine),"
                " pg_database_size(current_database())"
            )
            row = await cur.fetchone()
            cur = await self.reader.execute("SELECT origin, seq FROM hq_heads")
            heads = {str(o): int(n) for o, n in await cur.fetchall()}
        assert row is not None
        events, pending, quarantined, size = (int(v) for v in row)
        return LogStats(
            path=self.where, replica_id=self.replica_id, events=events, pending=pending,
            quarantined=quarantined, version_vector=heads, file_bytes=size,
        )  # fmt: skip

    def _after_commit(self, adm: Admission, new: list[RawEvent]) -> None:
        self._heads.update(adm.staged)
        self._pending_origins |= {o for o, *_ in adm.held}
        if adm.checkpointed:
            self.checkpoints = adm.checkpoints
        if adm.rotations != self.rotations or adm.checkpointed:
            self._learn(adm.rotations, adm.rotations)
        new = [*new, *adm.released.stored]  # released by a rotation: no request's
        if new:
            for listener in list(self.listeners):
                try:
                    listener(new)
                except Exception:
                    logger.exception("log listener %r failed", listener)

    async def _commit(
        self, decide: Callable[[Admission, Callable[[str, int], list[bytes]]], None],
        result: IngestResult,
    ) -> Admission:  # fmt: skip
        try:
            return await self._transaction(decide, result)
        except psycopg.Error as e:
            await self._load_after_failure()
            raise StorageError(self.where, str(e).strip()) from e
        except StorageError:  # another writer moved a head: take the database's
            logger.warning("%s: a head moved under this worker; reloading", self.where)
            await self._load_after_failure()
            raise

    async def _load_after_failure(self) -> None:
        try:
            await self._load()
        except psycopg.Error:
            logger.exception("reloading heads from %s failed", self.where)

    async def _transaction(
        self, decide: Callable[[Admission, Callable[[str, int], list[bytes]]], None],
        result: IngestResult,
    ) -> Admission:  # fmt: skip
        c = self.conn
        async with c.transaction():
            # Shared with every other worker's batch, exclusive for a revocation: a batch
            # sees the cut a revocation made, or the revocation sees the batch's events.
            # (An advisory lock: no row lock, which would write the row every batch.)
            await c.execute("SELECT pg_advisory_xact_lock_shared(%s)", (REVOKE_LOCK,))
            meta = await read_meta(c)
            revoked = {str(k): int(v) for k, v in json.loads(meta.get("revoked", "{}")).items()}
            rotations = load_rotations(meta)  # another worker may have taken one in
            learned = changed_origins(self.rotations, rotations)
            verifier = self._keys(rotations) if learned else self.verifier
            adm = Admission(dict(self._heads), self.owns, self.clock, self.wall_ms, revoked,
                            verifier, rotations=rotations,
                            checkpoints=dict(self.checkpoints),
                            holding=set(self._pending_origins))  # fmt: skip
            pending = await pending_rows(c, self._pending_origins)
            decide(adm, pending)
            if adm.rotated:  # HQ's key.rotated in this batch: every worker's from now on
                await c.execute("SELECT pg_advisory_xact_lock(%s)", (REVOKE_LOCK,))
                await store_rotations(c, adm.rotations)
            steps = [s for s in [*learned, *adm.rotated] if self.owns(s[0])]
            if steps:
                await apply_rotations(c, adm, steps, self.wall_ms())
            if adm.checkpointed:  # a till's history from before signing, vouched for
                await apply_checkpoints(c, adm)
            twins = adm.check_duplicates(await stored_hashes(c, adm.duplicates))
            result.rejected.extend(twins)
            result.duplicates -= len(twins)  # refused, not duplicates (as the SQLite log)
            await self._write_batch(adm)
        return adm

    async def _write_batch(self, adm: Admission) -> None:
        c = self.conn
        await self._move_heads(adm)  # first: a stale head stops the batch before any row
        await self._write_events(adm)
        facts = Facts()
        facts.add(adm.applied)
        await self._write_facts(facts)
        if adm.held:
            async with c.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO hq_pending VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    adm.held,
                )
        if adm.drained:
            async with c.cursor() as cur:
                await cur.executemany(
                    "DELETE FROM hq_pending WHERE origin = %s AND seq = %s", adm.drained
                )
        if adm.unverified:
            async with c.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO hq_unverified VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    adm.unverified,
                )
        if adm.quarantined:
            await _copy(c, "hq_quarantine", ("received_ms", "peer", "origin", "seq", "kind",
                                             "detail", "raw"), adm.quarantined)  # fmt: skip
        if adm.newly_revoked:
            await revoke(c, adm.newly_revoked, REVOKE_LOCK)
        if adm.newly_revoked or adm.catalog_stale:
            await self._refresh_products(None)

    async def _write_facts(self, facts: Facts) -> None:
        for table, rows in facts.rows.items():
            if rows:
                await _copy(self.conn, table, FACT_COLUMNS[table], rows, FACT_TYPES[table])
        await self._refresh_products(await touched_skus(self.conn, facts))

    async def _apply_stored(self) -> None:
        """Events an older build stored unapplied that this one reads (`upgrade.py`)."""
        async with self.conn.transaction():
            n = await apply_readable(self.conn, self.owns, self._write_facts)
        if n:
            logger.info("%s: applied %d events stored unapplied by an older build", self.where, n)

    async def _write_events(self, adm: Admission) -> None:
        """COPY straight into hq_events (measured 3.3 us/event, against 7.5 through a
        staging table and INSERT ... ON CONFLICT DO NOTHING). Safe without ON CONFLICT:
        every row is past its origin's head, and `_move_heads` has just moved each head
        from the value this worker read (`WHERE seq = <old>`, the row locked until
        COMMIT), so no other writer stores those seqs. Should a row be there anyway (a
        head written without its events, by hand), the unique key refuses the batch:
        the transaction rolls back, the heads are reloaded, and the next frame's copies
        of those events count as duplicates (`_commit`)."""
        if not adm.rows:
            return
        await _copy(self.conn, "hq_events", EVENT_COLUMNS, adm.rows, EVENT_TYPES)

    async def _move_heads(self, adm: Admission) -> None:
        """Each staged head from the one this process read, or the batch is undone."""
        for origin, (seq, h) in adm.staged.items():
            old = self._heads.get(origin, NO_HEAD)[0]
            last = adm.last_hlc[origin]
            if old == 0:
                cur = await self.conn.execute(
                    "INSERT INTO hq_heads (origin, store, seq, hash, last_hlc)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (origin) DO NOTHING",
                    (origin, origin.partition("/")[0], seq, h, last),
                )
            else:
                cur = await self.conn.execute(
                    "UPDATE hq_heads SET seq = %s, hash = %s, last_hlc = %s, updated_at = now()"
                    " WHERE origin = %s AND seq = %s",
                    (seq, h, last, origin, old),
                )
            if cur.rowcount != 1:
                raise StorageError(
                    self.where, f"{origin} was written by another worker meanwhile: reloading"
                )

    async def _refresh_products(self, skus: Iterable[str] | None) -> None:
        await refresh_products(self.conn, skus, self.price_policy, self.window_ms)


async def _copy(
    conn: AsyncConnection[Any],
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[object]],
    types: Sequence[str] | None = None,
) -> None:
    """COPY `rows` into `table`: binary with `types`, else text."""
    form = sql.SQL(" (FORMAT BINARY)" if types else "")
    stmt = sql.SQL("COPY {} ({}) FROM STDIN{}").format(
        sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, columns)), form
    )
    async with conn.cursor() as cur, cur.copy(stmt) as copy:
        if types:
            copy.set_types(list(types))
        for row in rows:
            await copy.write_row(row)
