"""The state digest the triggers keep equals the one recomputed from every row.

- at the fold: after any batches of any scenario, duplicates included, and a change of
  price policy (which rewrites the effective catalog);
- at the log: after any sequence of appends, ingests (in order, or shuffled so events
  are held and released), compaction, rebuild and reopening, on a real SQLite file;
  and the digest stays a function of the set of events (a rebuild keeps it).
The oversell runs the fold keeps (`conflict.oversold`) are checked at every one of
those points too: the conflicts read from them equal those the full replay finds.
The kill -9 half is in tests/core/test_crash.py (`check_database`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import oversell_settle, oversold, queries
from conflict.state import StoreState
from core import log as log_module
from core.bodies import ConflictResolved, ResolvedMove
from core.compact import compact, load_snapshot, read_heads, save_snapshot
from core.events import RawEvent, StockCounted, StockReceived, encode_event
from core.fold import Accepted
from core.log import EventLog
from core.sqlite import open_sync
from tests.factories import cash_sale, chain

from .factory import (
    Chain,
    apply_all,
    assert_oversell_kept,
    fresh_db,
    sale_body,
    scenarios,
    split,
)


def _agree(conn: object) -> str:
    assert_oversell_kept(conn)  # type: ignore[arg-type]
    held = queries.state_digest(conn)  # type: ignore[arg-type]
    assert held == queries.state_digest(conn, recompute=True)  # type: ignore[arg-type]
    return held


@contextmanager
def _holding(hold: bool, one_pass: bool = False) -> Iterator[None]:
    """With `hold`, every late (store, sku) is held back, not replayed at once (as after
    a long catch-up), so the held path and its settling are what gets checked. With
    `one_pass`, every replay reads its sale lines in the one shared pass a replay of
    more than a few (store, sku)s takes (these scenarios have few SKUs)."""
    kept_budget, kept_few = list(oversold.HOLD_AFTER), oversold._FEW
    if hold:
        oversold.HOLD_AFTER[:] = [0, 0]
    if one_pass:
        oversold._FEW = 0
    try:
        yield
    finally:
        oversold.HOLD_AFTER[:] = kept_budget
        oversold._FEW = kept_few


@settings(max_examples=80, deadline=None)
@given(data=st.data(), events=scenarios(effects=True), hold=st.booleans(), one_pass=st.booleans())
def test_kept_digest_equals_recomputed_after_any_batches(
    data: st.DataObject, events: list[Accepted], hold: bool, one_pass: bool
) -> None:
    fold = StoreState()
    conn = fresh_db(fold)
    try:
        _agree(conn)
        with_dups = data.draw(st.permutations(events + events[: len(events) // 3]))
        cuts = data.draw(st.lists(st.integers(0, 60), max_size=6))
        with _holding(hold, one_pass):
            apply_all(fold, conn, with_dups, cuts)
        _agree(conn)
        for _ in range(data.draw(st.integers(0, 3))):  # the log's idle time, a slice each
            fold.settle(conn)
            _agree(conn)
        held = oversold.held(conn)
        fold.create_tables(conn)  # as a log's open: what is held stays held
        assert oversold.held(conn) == held
        _settle_all(fold, conn)
        assert not oversold.held(conn)
        _agree(conn)
        StoreState(price_policy="lowest").create_tables(conn)  # re-derives st_products
        _agree(conn)
        conn.execute("DELETE FROM st_oversell_tail")  # as if a snapshot had just been loaded
        StoreState(price_policy="lowest").create_tables(conn)  # derives the runs afresh
        _agree(conn)
    finally:
        conn.close()


@contextmanager
def _lazy(lines: int, slice_sales: int) -> Iterator[None]:
    """Batches of `lines` sale lines or more are held (as a catch-up's frames are), and
    settling passes walk `slice_sales` sales per slice."""
    kept_lines, kept_slice = oversold.LAZY_LINES, oversell_settle.SLICE_SALES
    oversold.LAZY_LINES, oversell_settle.SLICE_SALES = lines, slice_sales
    try:
        yield
    finally:
        oversold.LAZY_LINES, oversell_settle.SLICE_SALES = kept_lines, kept_slice


@settings(max_examples=80, deadline=None)
@given(
    data=st.data(),
    events=scenarios(effects=True),
    lazy=st.booleans(),
    slice_sales=st.integers(1, 4),
)
def test_held_runs_settled_a_slice_at_a_time_between_batches(
    data: st.DataObject, events: list[Accepted], lazy: bool, slice_sales: int
) -> None:
    """Settling passes interleaved with batches that move their SKUs behind, at and ahead
    of the pass's cursor; once nothing is held the kept runs equal the full replay."""
    fold = StoreState()
    conn = fresh_db(fold)
    try:
        with_dups = data.draw(st.permutations(events + events[: len(events) // 3]))
        cuts = data.draw(st.lists(st.integers(0, 60), max_size=8))
        with _holding(True), _lazy(1 if lazy else 10**9, slice_sales):
            for batch in split(with_dups, cuts):
                with conn:
                    fold.apply(conn, batch)
                for _ in range(data.draw(st.integers(0, 3))):
                    with conn:
                        fold.settle(conn)
                _agree(conn)
            for _ in range(10_000):  # far more than the slices any scenario needs
                with conn:
                    if not fold.settle(conn):
                        break
        assert not oversold.held(conn)
        _agree(conn)
    finally:
        conn.close()


@settings(max_examples=30, deadline=None)
@given(events=scenarios())
def test_a_snapshot_loaded_anywhere_keeps_its_digest(events: list[Accepted]) -> None:
    """A snapshot loaded into another database (an ops tool's scratch state, a seeded
    replacement till, a checkpoint) holds the same digest, kept as recomputed: the sales
    register has no INSERT trigger (the fold counts its own rows), so the load recounts."""
    fold = StoreState()
    src, dst = fresh_db(fold), fresh_db(fold)
    try:
        apply_all(fold, src, events, [])
        save_snapshot(src, src, fold.tables)
        load_snapshot(src, dst, fold.tables)
        fold.create_tables(dst)  # as every loader does: derives the oversell runs
        assert _agree(dst) == _agree(src)
    finally:
        src.close()
        dst.close()


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("ingest"), st.integers(1, 12), st.booleans()),
        st.tuples(st.just("append"), st.integers(1, 5), st.booleans()),
        st.tuples(st.just("compact"), st.integers(0, 3), st.booleans()),
        st.tuples(st.just("rebuild"), st.just(0), st.booleans()),
        st.tuples(st.just("reopen"), st.just(0), st.booleans()),
        st.tuples(st.just("idle"), st.just(0), st.booleans()),
    ),
    max_size=8,
)


class _Run:
    """A real log on a file, driven by the drawn operations."""

    def __init__(self, path: Path, events: list[Accepted]) -> None:
        self.path, self.events, self.next = path, events, 0
        self.log: EventLog | None = None
        self.appended = 0

    async def open(self) -> EventLog:
        self.log = await EventLog.open(self.path, "s3/t9", StoreState())
        return self.log

    async def digest(self) -> str:
        assert self.log is not None
        return await self.log.read(_agree)

    async def step(self, op: str, n: int, flag: bool, data: st.DataObject) -> None:
        assert self.log is not None
        if op == "ingest":
            chunk = self.events[self.next : self.next + n]
            self.next += len(chunk)
            if flag:  # out of order: later seqs are held until their gap fills
                chunk = data.draw(st.permutations(chunk))
            raws = [RawEvent(a.event, encode_event(a.event)) for a in chunk]
            await self.log.ingest(raws)  # some refused (a till's catalog write): fine here
        elif op == "append":
            bodies = [cash_sale(sku="A", receipt=f"L{self.appended + i}") for i in range(n)]
            self.appended += n
            await self.log.append_many(bodies)
        elif op == "idle":  # the writer settles what the fold held back, by itself
            async with asyncio.timeout(10):
                while await self.log.read(oversold.held):
                    await asyncio.sleep(0.01)
        elif op == "rebuild":
            before = await self.digest()
            await self.log.rebuild()
            assert await self.digest() == before  # a function of the events, not of history
        else:  # compact and reopen both close the log: compaction wants it stopped
            await self.log.close()
            if op == "compact":
                self._compact(keep=n)
            await self.open()

    def _compact(self, keep: int) -> None:
        conn = open_sync(self.path)
        try:
            floor = {o: max(0, h.seq - keep) for o, h in read_heads(conn).items()}
            compact(conn, StoreState(), StoreState.tables, floor)
        finally:
            conn.close()


@settings(max_examples=20, deadline=None)
@given(data=st.data(), events=scenarios(max_events=30), ops=_OPS, hold=st.booleans())
def test_kept_digest_equals_recomputed_through_the_log(
    data: st.DataObject, events: list[Accepted], ops: list[tuple[str, int, bool]], hold: bool
) -> None:
    async def run(path: Path) -> None:
        r = _Run(path, events)
        await r.open()
        try:
            await r.digest()
            for op, n, flag in ops:
                await r.step(op, n, flag, data)
                await r.digest()
            await r.step("ingest", len(events), False, data)  # the rest, in order
            final = await r.digest()
            await r.log.rebuild()  # type: ignore[union-attr]
            assert await r.digest() == final
        finally:
            await r.log.close()  # type: ignore[union-attr]

    with tempfile.TemporaryDirectory() as tmp, _holding(hold), _idle_after(0.01):
        asyncio.run(run(Path(tmp) / "log.db"))


@contextmanager
def _idle_after(seconds: float) -> Iterator[None]:
    """The log's writer settles held-back work after `seconds` idle (0.5 s in use)."""
    kept = log_module.SETTLE_WHEN_IDLE_S
    log_module.SETTLE_WHEN_IDLE_S = seconds
    try:
        yield
    finally:
        log_module.SETTLE_WHEN_IDLE_S = kept


async def _held_by_a_catch_up(path: Path) -> EventLog:
    """A log whose four SKUs a catch-up held back: a peer's history arriving behind
    another's (call under `_holding(True)`)."""
    late = chain("s1/t3", [cash_sale(sku=f"S{i % 4}", receipt=f"L{i}") for i in range(40)])
    ahead = chain("s1/t2", [cash_sale(sku=f"S{i % 4}", receipt=f"A{i}") for i in range(40)],
                  first_hlc=1 << 20)  # fmt: skip
    log = await EventLog.open(path, "s1/t1", StoreState())
    for events in (ahead, late):
        await log.ingest([RawEvent(e, encode_event(e)) for e in events])
    return log


async def test_the_log_settles_held_back_skus_while_idle(tmp_path: Path) -> None:
    """After a catch-up held SKUs back, the writer settles them when idle, a slice per
    transaction, so the first sale of each does not; the kept runs then equal the full
    replay, and selling meanwhile works."""
    with _holding(True), _idle_after(0.05):
        log = await _held_by_a_catch_up(tmp_path / "log.db")
        try:
            assert len(await log.read(oversold.held)) == 4  # as the catch-up left them
            await log.append(cash_sale(sku="S0", receipt="OWN"))
            await _until_settled(log)
        finally:
            await log.close()


async def _until_settled(log: EventLog) -> None:
    """Until the writer has settled all it held (10 s at most); then the kept runs equal
    the full replay."""
    async with asyncio.timeout(10):
        while await log.read(oversold.held):
            await asyncio.sleep(0.01)
    await log.read(_agree)


def _settle_all(fold: StoreState, conn: sqlite3.Connection) -> None:
    for _ in range(1_000):
        with conn:
            if not fold.settle(conn):
                return
    raise AssertionError("settling did not finish in 1,000 slices")


def _batches(fold: StoreState, conn: sqlite3.Connection, *batches: list[Accepted]) -> None:
    for batch in batches:
        with conn:
            fold.apply(conn, batch)


@pytest.mark.parametrize("late_ms", [1_000_200, 1_070_000])  # the count's minute, the next
def test_a_held_sku_settles_from_the_count_before_it(late_ms: int) -> None:
    """A sale held late after a count starts its replay from the count's level: at the
    count if it is in the sale's bucket (a minute), else at the bucket's start, from the
    count and the buckets between. 3 counted, 3 sold after it (level 0: no oversell),
    then 1 more (a run)."""
    c, fold = Chain(), StoreState()
    conn = fresh_db(fold)
    count = c.make("s1/t1", StockCounted(sku="A", count=3), 1_000_100)
    later = c.make("s1/t1", sale_body([("A", 1, 100)], "R1"), late_ms + 100)
    late = c.make("s1/t2", sale_body([("A", 3, 100)], "R2"), late_ms)
    with _holding(True), _lazy(10**9, 1):
        receipt = c.make("s1/t1", StockReceived(sku="A", qty=9), 1_000_000)
        _batches(fold, conn, [receipt], [count, later])
        _settle_all(fold, conn)  # kept up to `later`; then `late` comes behind it
        _batches(fold, conn, [late])
        assert oversold.held(conn) == {("s1", "A")}
        _settle_all(fold, conn)
    assert not oversold.held(conn)
    _agree(conn)
    runs = conn.execute("SELECT run_eid FROM st_oversell_runs").fetchall()
    assert runs == [(later.event.id,)]


def test_a_move_between_the_cursor_and_a_settling_skus_start_restarts_it() -> None:
    """SKU B settles from 8 s, the pass's cursor is at A's 2 s: a sale of B at 5 s lands
    ahead of the cursor but behind B's start, so B must be replayed from 5 s."""
    c, fold = Chain(), StoreState()
    conn = fresh_db(fold)
    with _holding(True), _lazy(1, 1):
        _batches(fold, conn, [c.make("s1/t1", sale_body([("A", 1, 100)], "R1"), 2_000)],
                 [c.make("s1/t1", sale_body([("B", 1, 100)], "R2"), 8_000)])  # fmt: skip
        with conn:
            assert fold.settle(conn)  # the pass starts: A from 2 s, B from 8 s
        assert oversold.settling(conn).keys() == {("s1", "A"), ("s1", "B")}
        b_at_5 = c.make("s1/t2", sale_body([("B", 2, 100)], "R3"), 5_000)
        _batches(fold, conn, [b_at_5])
        assert ("s1", "B") not in oversold.settling(conn)
        _settle_all(fold, conn)
    _agree(conn)
    runs = conn.execute("SELECT sku, run_eid FROM st_oversell_runs ORDER BY sku").fetchall()
    assert runs == [("A", "s1/t1:1"), ("B", b_at_5.event.id)]


async def test_a_writer_never_idle_still_settles_held_skus(tmp_path: Path) -> None:
    """Sales every 50 ms never leave the writer idle for SETTLE_WHEN_IDLE_S (set to a
    minute here): held SKUs are settled a slice every SETTLE_WHILE_BUSY_S all the same."""
    with _holding(True), _idle_after(60.0):
        log = await _held_by_a_catch_up(tmp_path / "log.db")
        try:
            assert await log.read(oversold.held)
            sold = 0
            async with asyncio.timeout(20):
                while await log.read(oversold.held):
                    await log.append(cash_sale(sku="OTHER", receipt=f"B{sold}"))
                    sold += 1
                    await asyncio.sleep(0.05)  # the pace of a busy till, not a wait
            assert sold >= 10  # it was busy all along: settled between sales, never idle
            await log.read(_agree)
        finally:
            await log.close()


def test_a_held_sku_whose_stock_row_vanished_keeps_no_run() -> None:
    """A resolution's move takes Z below zero (a run); an earlier resolution of the same
    conflict (no effects) then wins, its move is taken out and Z's stock row dropped.
    Held (a sale of A is newer), Z is settled by a pass: its old run must go too."""
    c, fold = Chain(), StoreState()
    conn = fresh_db(fold)
    with _holding(True), _lazy(10**9, 1):
        move = ResolvedMove(sku="Z", delta=-2)
        late = ConflictResolved(conflict="c1", action="compensate", by="mgr", moves=[move])
        _batches(fold, conn, [c.make("s1/t1", late, 5_000)])
        assert conn.execute("SELECT count(*) FROM st_oversell_runs").fetchone()[0] == 1
        _batches(fold, conn, [c.make("s1/t1", sale_body([("A", 1, 100)], "R1"), 6_000)])
        early = ConflictResolved(conflict="c1", action="accept", by="mgr")
        _batches(fold, conn, [c.make("s1/t2", early, 1_000)])
        assert conn.execute("SELECT 1 FROM st_stock WHERE sku = 'Z'").fetchone() is None
        assert ("s1", "Z") in oversold.held(conn)
        _settle_all(fold, conn)
    assert not oversold.held(conn)
    assert_oversell_kept(conn)


def test_a_settling_sku_whose_stock_row_vanishes_ahead_of_the_cursor_keeps_no_tail() -> None:
    """Z is in a pass whose cursor is behind Z's only move (a resolution's); an earlier
    resolution then takes that move out (ahead of the cursor: Z stays in the pass) and
    Z's stock row goes. The pass's end must not write Z a tail: `kept` counts tails
    against stock rows, and a till's next open would re-derive every run."""
    c, fold = Chain(), StoreState()
    conn = fresh_db(fold)
    with _holding(True), _lazy(1, 1):
        for ms in (2_000, 3_000):
            _batches(fold, conn, [c.make("s1/t1", sale_body([("A", 1, 100)], f"R{ms}"), ms)])
        move = ResolvedMove(sku="Z", delta=-2)
        late = ConflictResolved(conflict="c1", action="compensate", by="mgr", moves=[move])
        _batches(fold, conn, [c.make("s1/t1", sale_body([("A", 1, 100)], "R8"), 8_000)],
                 [c.make("s1/t3", late, 7_000)])  # fmt: skip
        with conn:
            assert fold.settle(conn)  # the pass starts
        with conn:
            assert fold.settle(conn)  # one slice: the cursor is past 2 s, before 7 s
        cursor = oversold.pass_cursor(conn)
        assert cursor is not None and ("s1", "Z") in oversold.settling(conn)
        early = ConflictResolved(conflict="c1", action="accept", by="mgr")
        _batches(fold, conn, [c.make("s1/t2", early, 1_000)])
        assert conn.execute("SELECT 1 FROM st_stock WHERE sku = 'Z'").fetchone() is None
        assert ("s1", "Z") in oversold.settling(conn)  # the move went ahead of the cursor
        _settle_all(fold, conn)
    assert not oversold.held(conn)
    assert_oversell_kept(conn)


async def test_skus_held_by_an_own_append_of_a_catch_ups_size_are_settled(
    tmp_path: Path,
) -> None:
    """A till's own append of LAZY_LINES sale lines or more holds its SKUs as a catch-up's
    frame does: the writer settles them too, with no ingest to mark the log unsettled."""
    with _idle_after(0.01):
        log = await EventLog.open(tmp_path / "log.db", "s1/t1", StoreState())
    try:
        async with asyncio.timeout(10):  # the open's own settling round ends: none held
            while log._unsettled:
                await asyncio.sleep(0.01)
        with _idle_after(0.5):  # as in use: the read right after the append comes first
            bodies = [cash_sale(sku="A", receipt=f"R{i}") for i in range(oversold.LAZY_LINES)]
            await log.append_many(bodies)
            assert await log.read(oversold.held) == {("s1", "A")}  # held, as a frame's
            await _until_settled(log)
    finally:
        await log.close()
