"""The event-log contract: one suite, run against every log implementation.

`EventLogContract` is the whole log (a concrete class sets `make_log(tmp_path,
replica_id, fold, **kw)`); `SyncLogContract` is the part sync relies on, which the
simulator's in-memory log keeps too.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from core.errors import ChainBroken, DecodeError, Equivocation, OutOfScope, StorageError
from core.events import (
    HQ,
    SCHEMA_VERSION,
    RawEvent,
    StockAdjusted,
    encode_event,
    event_hash,
    store_of,
)
from core.fold import FLAG_UNAPPLIED
from tests.core.folds import CountingFold, counts
from tests.factories import cash_sale, chain


class EventLogContract:
    async def make_log(self, path, replica_id, fold, **kw):  # pragma: no cover - abstract
        raise NotImplementedError

    @pytest.fixture
    async def log(self, tmp_path):
        log = await self.make_log(tmp_path / "a.db", "s1/t1", CountingFold())
        yield log
        await log.close()

    async def test_append_assigns_contiguous_seqs_and_a_hash_chain(self, log):
        events = [await log.append(cash_sale(receipt=f"R{i}")) for i in range(3)]
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].prev == b""
        assert events[1].prev == event_hash(events[0])
        assert events[2].hlc > events[1].hlc > events[0].hlc
        assert log.version_vector() == {"s1/t1": 3}

    async def test_concurrent_appends_are_all_durable_and_distinct(self, log):
        events = await asyncio.gather(*[log.append(cash_sale()) for _ in range(200)])
        assert sorted(e.seq for e in events) == list(range(1, 201))
        assert await log.read(counts) == {"s1/t1": 200}

    async def test_a_listener_that_raises_stops_neither_the_writer_nor_other_listeners(
        self, log, caplog
    ):
        heard = []

        def broken(events):
            raise RuntimeError("listener bug")

        log.listeners.extend([broken, heard.extend])
        first = await log.append(cash_sale(receipt="L1"))
        second = await log.append(cash_sale(receipt="L2"))  # was: "log is closed"
        assert [s.event for s in heard] == [first, second]
        assert [s.raw for s in heard] == [encode_event(first), encode_event(second)]
        assert "listener bug" in caplog.text

    async def test_ingest_is_idempotent(self, log):
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(5)])
        first = await log.ingest(remote, peer="s1/t2")
        again = await log.ingest(remote, peer="s1/t3")
        assert len(first.accepted) == 5 and again.duplicates == 5 and not again.accepted
        assert await log.read(counts) == {"s1/t2": 5}

    async def test_equivocation_is_quarantined_and_the_stored_event_kept(self, log):
        (original,) = chain("s1/t2", [cash_sale(price=100)])
        (forged,) = chain("s1/t2", [cash_sale(price=999)])
        await log.ingest([original])
        result = await log.ingest([forged], peer="evil")
        assert isinstance(result.rejected[0], Equivocation)
        stored = await log.read_range("s1/t2", 1, 10)
        assert stored == [encode_event(original)]
        assert (await log.stats()).quarantined == 1

    async def test_ingests_reach_the_log_in_call_order(self, log):
        # A big frame is checked in slices; a small one handed in after it must not
        # overtake it (its events would be held behind a gap).
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(1100)])
        big = asyncio.create_task(log.ingest(remote[:1000]))
        small = asyncio.create_task(log.ingest(remote[1000:]))
        first, second = await big, await small
        assert len(first.accepted) == 1000 and len(second.accepted) == 100
        assert second.held == 0 and log.version_vector()["s1/t2"] == 1100

    async def test_stats_count_what_the_events_table_holds(self, log):
        await log.append_many([cash_sale(receipt=f"L{i}") for i in range(3)])
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(6)])
        await log.ingest(remote[:2] + remote[4:])  # 2 stored, 2 held behind a gap
        stats = await log.stats()
        rows = await log.read(lambda c: c.execute("SELECT count(*) FROM events").fetchone()[0])
        assert stats.events == rows == 5 and stats.pending == 2

    async def test_file_bytes_are_the_database_and_its_wal_and_shm(self, log):
        await log.append(cash_sale(receipt="F1"))
        (log.path.parent / (log.path.name + ".dead")).write_bytes(b"x" * 100_000)
        files = [log.path.with_name(log.path.name + s) for s in ("", "-wal", "-shm")]
        on_disk = sum(f.stat().st_size for f in files if f.exists())
        assert (await log.stats()).file_bytes == on_disk  # not the unrelated `.dead` file

    async def test_gap_is_held_until_filled(self, log):
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(4)])
        held = await log.ingest(remote[2:])
        assert held.held == 2 and log.version_vector().get("s1/t2", 0) == 0
        assert await log.read(counts) == {}
        filled = await log.ingest(remote[:2])
        assert [e.seq for e in filled.accepted] == [1, 2, 3, 4]
        assert log.version_vector()["s1/t2"] == 4
        assert (await log.stats()).pending == 0

    async def test_broken_chain_is_refused(self, log):
        a = chain("s1/t2", [cash_sale(receipt="A1"), cash_sale(receipt="A2")])
        b = chain("s1/t2", [cash_sale(receipt="B1"), cash_sale(receipt="B2")])
        await log.ingest([a[0]])
        result = await log.ingest([b[1]])
        assert isinstance(result.rejected[0], ChainBroken)
        assert log.version_vector()["s1/t2"] == 1

    async def test_unknown_type_is_stored_and_forwardable_but_not_applied(self, log):
        (ev,) = chain("s1/t2", [cash_sale()])
        future = msgspec.structs.replace(ev, type="loyalty.points", schema=SCHEMA_VERSION + 1)
        result = await log.ingest([future])
        assert result.accepted == [future] and not result.rejected
        assert log.version_vector()["s1/t2"] == 1
        assert await log.read(counts) == {}
        assert await log.read_range("s1/t2", 1, 1) == [encode_event(future)]
        flags = await log.read(lambda c: c.execute("SELECT flags FROM events").fetchone()[0])
        assert flags & FLAG_UNAPPLIED

    async def test_out_of_scope_origin_is_refused(self, tmp_path):
        log = await self.make_log(
            tmp_path / "s.db",
            "s1/t1",
            CountingFold(),
            in_scope=lambda o: o == HQ or store_of(o) == "s1",
        )
        try:
            result = await log.ingest(chain("s2/t1", [cash_sale()]))
            assert isinstance(result.rejected[0], OutOfScope)
            assert log.version_vector() == {}
        finally:
            await log.close()

    async def test_garbage_bytes_are_refused_without_harm(self, log):
        good = chain("s1/t2", [cash_sale()])
        result = await log.ingest_raw([b"\xc1garbage", encode_event(good[0])])
        assert isinstance(result.rejected[0], DecodeError)
        assert log.version_vector() == {"s1/t2": 1}

    async def test_fold_failure_rolls_back_the_event(self, tmp_path):
        fold = CountingFold()
        log = await self.make_log(tmp_path / "f.db", "s1/t1", fold)
        try:
            await log.append(cash_sale())
            fold.fail_on_type = "stock.adjusted"
            with pytest.raises(RuntimeError):
                await log.append(StockAdjusted(sku="A", delta=1, reason="x"))
            assert log.version_vector() == {"s1/t1": 1}
            fold.fail_on_type = None
            assert (await log.append(cash_sale())).seq == 2
        finally:
            await log.close()

    async def test_reopen_keeps_heads_and_clock(self, tmp_path):
        path = tmp_path / "r.db"
        log = await self.make_log(path, "s1/t1", CountingFold())
        last = await log.append(cash_sale())
        await log.close()
        log = await self.make_log(path, "s1/t1", CountingFold())
        try:
            nxt = await log.append(cash_sale())
            assert (nxt.seq, nxt.prev) == (2, event_hash(last)) and nxt.hlc > last.hlc
        finally:
            await log.close()

    async def test_a_log_belongs_to_one_replica(self, tmp_path):
        path = tmp_path / "o.db"
        await (await self.make_log(path, "s1/t1", CountingFold())).close()
        with pytest.raises(StorageError, match="belongs to replica"):
            await self.make_log(path, "s1/t2", CountingFold())

    async def test_rebuild_gives_the_same_state(self, log):
        await log.ingest(chain("s1/t2", [cash_sale() for _ in range(7)]))
        await log.append(cash_sale())
        before = await log.read(counts)
        assert await log.rebuild() == 8
        assert await log.read(counts) == before


class SyncLogContract:
    """What sync relies on of any log (`replicas.sync.driver.SyncLog`): run against the
    SQLite log and the simulator's in-memory log, so the simulator's log keeps the
    promises the real one makes. A concrete class sets `make_sync_log(tmp_path, in_scope)`
    for a log of replica s1/t1."""

    async def make_sync_log(self, path, in_scope):  # pragma: no cover - abstract
        raise NotImplementedError

    @pytest.fixture
    async def slog(self, tmp_path):
        log = await self.make_sync_log(tmp_path / "sync.db", lambda o: True)
        yield log
        if hasattr(log, "close"):
            await log.close()

    async def test_sync_ingest_is_idempotent_and_serves_the_bytes_it_stored(self, slog):
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(5)])
        first = await slog.ingest([RawEvent(ev, encode_event(ev)) for ev in remote], "s1/t2")
        again = await slog.ingest(remote, "s1/t3")
        assert [s.raw for s in first.stored] == [encode_event(ev) for ev in remote]
        assert again.duplicates == 5 and not again.stored
        assert slog.version_vector() == {"s1/t2": 5}
        assert await slog.read_range("s1/t2", 2, 2) == [encode_event(ev) for ev in remote[1:3]]

    async def test_sync_gap_is_held_until_filled(self, slog):
        remote = chain("s1/t2", [cash_sale(receipt=f"R{i}") for i in range(4)])
        held = await slog.ingest(remote[2:])
        assert held.held == 2 and slog.version_vector().get("s1/t2", 0) == 0
        await slog.ingest(remote[:2])
        assert slog.version_vector()["s1/t2"] == 4

    async def test_sync_equivocation_and_broken_chains_are_refused(self, slog):
        (original,) = chain("s1/t2", [cash_sale(price=100)])
        (forged,) = chain("s1/t2", [cash_sale(price=999)])
        other = chain("s1/t2", [cash_sale(receipt="B1"), cash_sale(receipt="B2")])
        await slog.ingest([original])
        assert isinstance((await slog.ingest([forged])).rejected[0], Equivocation)
        assert isinstance((await slog.ingest([other[1]])).rejected[0], ChainBroken)
        assert await slog.read_range("s1/t2", 1, 10) == [encode_event(original)]

    async def test_sync_out_of_scope_origin_is_refused(self, tmp_path):
        slog = await self.make_sync_log(tmp_path / "s.db", lambda o: o == HQ or store_of(o) == "s1")
        try:
            result = await slog.ingest(chain("s2/t1", [cash_sale()]))
            assert isinstance(result.rejected[0], OutOfScope)
            assert slog.version_vector() == {}
        finally:
            if hasattr(slog, "close"):
                await slog.close()
