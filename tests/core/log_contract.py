"""The event-log contract: one suite, run against every log implementation.

A concrete test class sets `make_log(tmp_path, replica_id, fold, **kw)`.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from core.errors import ChainBroken, DecodeError, Equivocation, OutOfScope, StorageError
from core.events import HQ, StockAdjusted, encode_event, event_hash, store_of
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
        future = msgspec.structs.replace(ev, type="loyalty.points", schema=2)
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
