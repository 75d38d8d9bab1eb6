"""Events stored as segments (schema 3, issue 19): the migration of a schema-2 log keeps
its events and state digest; `read_range` serves the stored bytes across segments; the
`events` view and its triggers behave as the table of one row per event did."""

from __future__ import annotations

import itertools
import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from conflict.state import StoreState
from core import hlc_order, segments
from core.events import SCHEMA_VERSION, StockReceived, encode_event, event_hash
from core.fold import FLAG_SKEWED, FLAG_UNAPPLIED
from core.log import EventLog
from core.verify import verify_log
from tests.factories import cash_sale, chain
from tests.schema2 import to_schema_2

ALL_ROWS = "SELECT origin, seq, hlc, type, flags, hash, raw FROM events ORDER BY origin, seq"


def _sales(origin: str, n: int, first_seq: int = 1, prev: bytes = b"") -> list:
    bodies = [cash_sale(sku=f"SKU-{i % 7}", receipt=f"{origin}-R{first_seq + i}") for i in range(n)]
    return chain(origin, bodies, prev=prev, first_seq=first_seq)  # type: ignore[arg-type]


async def _varied_log(path: Path) -> EventLog:
    """Local sales, two remote chains in several frames (one past a segment's size), a
    stock receipt, and events flagged unapplied (a newer type) and skewed."""
    log = await EventLog.open(path, "s1/t1", StoreState())
    for i in range(5):
        await log.append(cash_sale(receipt=f"L{i}"))
    t2 = _sales("s1/t2", segments.MAX_SEGMENT_EVENTS + 40)
    for i in range(0, len(t2), 300):
        assert not (await log.ingest(t2[i : i + 300])).rejected
    (receipt,) = chain("s1/t3", [StockReceived(sku="SKU-1", qty=40)])
    future = msgspec.structs.replace(
        chain("s1/t3", [cash_sale()], prev=event_hash(receipt), first_seq=2)[0],
        type="loyalty.points",
        schema=SCHEMA_VERSION + 1,
    )
    ahead = chain("s1/t3", [cash_sale(receipt="AHEAD")], prev=event_hash(future), first_seq=3)
    ahead = [msgspec.structs.replace(ahead[0], hlc=1 << 62)]  # far past our clock: skewed
    assert not (await log.ingest([receipt, future, *ahead])).rejected
    return log


async def test_a_schema_2_log_migrates_with_events_and_digest_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "t1.db"
    log = await _varied_log(path)
    before = await log.read(lambda c: c.execute(ALL_ROWS).fetchall())
    digest = await log.read(queries.state_digest)
    served = await log.read_range("s1/t2", 1, 5000)
    await log.close()
    flags = {(o, s): f for o, s, _, _, f, _, _ in before if f}
    assert set(flags.values()) == {FLAG_UNAPPLIED, FLAG_SKEWED}

    assert to_schema_2(path) == len(before)
    with closing(sqlite3.connect(path)) as conn:  # what the builds before segments wrote
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        kind = conn.execute("SELECT type FROM sqlite_master WHERE name = 'events'").fetchone()
        assert kind == ("table",)

    log = await EventLog.open(path, "s1/t1", StoreState())
    try:
        after = await log.read(lambda c: c.execute(ALL_ROWS).fetchall())
        assert after == before
        assert await log.read(queries.state_digest) == digest
        assert await log.read(lambda c: queries.state_digest(c, recompute=True)) == digest
        assert await log.read_range("s1/t2", 1, 5000) == served
        in_hlc_order = "SELECT * FROM events ORDER BY hlc, origin, seq"
        merged = await log.read(
            lambda c: list(hlc_order.in_hlc_order(c, segments.origins(c)) or [])
        )
        assert merged == await log.read(lambda c: c.execute(in_hlc_order).fetchall())
        assert served == [row[6] for row in before if row[0] == "s1/t2"]
        version = await log.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        assert version == 3
        # the chains go on from the migrated heads
        assert (await log.append(cash_sale(receipt="L5"))).seq == 6
        more = _sales(
            "s1/t2", 3, len(served) + 1, prev=event_hash(_sales("s1/t2", len(served))[-1])
        )
        result = await log.ingest(more)
        assert len(result.accepted) == 3 and not result.rejected
    finally:
        await log.close()
    with closing(sqlite3.connect(path)) as conn:
        report = verify_log(conn)
    assert not [f for f in report.findings if f.severity == "defect"], report.findings


async def test_read_range_serves_the_stored_bytes_across_segments(tmp_path: Path) -> None:
    log = await EventLog.open(tmp_path / "a.db", "s1/t1", StoreState())
    try:
        t2 = _sales("s1/t2", 2 * segments.MAX_SEGMENT_EVENTS + 10)
        for i in range(0, len(t2), 700):  # several commits, segments of 700 and of the cap
            await log.ingest(t2[i : i + 700])
        raws = [encode_event(e) for e in t2]
        for first, limit in [(1, 10), (690, 20), (1020, 10), (1, 5000), (2058, 10), (2059, 3)]:
            assert await log.read_range("s1/t2", first, limit) == raws[first - 1 :][:limit]
        assert await log.read_range("s1/t2", len(t2) + 1, 10) == []
        assert await log.read_range("s1/t9", 1, 10) == []
        rows = await log.read(lambda c: c.execute("SELECT count(*) FROM segments").fetchone())
        assert rows[0] < len(t2) // 100  # one row per run, not per event
    finally:
        await log.close()


def _model_db(tmp_path: Path, runs: list[int]) -> tuple[sqlite3.Connection, dict]:
    conn = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    segments.create(conn)
    model: dict[tuple[str, int], tuple] = {}
    seq = 0
    for n in runs:
        rows = []
        for _ in range(n):
            seq += 1
            raw = f"event {seq} ".encode() * (seq % 5 + 1)
            row = ("o", seq, 1000 + seq, f"t{seq % 3}", 0, bytes([seq % 256]) * 32, raw)
            rows.append(row)
            model[("o", seq)] = row
        segments.write(conn, rows)
    return conn, model


_edit = st.tuples(st.sampled_from(["delete", "update", "flag", "insert"]), st.integers(1, 160))
# Runs as commits write them: mostly one event (a till's own sales), some longer; past
# multiples of segments.COALESCE_EVENTS the small ones are merged.
_runs = st.lists(st.one_of(st.just(1), st.integers(1, 40)), min_size=1, max_size=40)


@settings(max_examples=40, deadline=None)
@given(runs=_runs, edits=st.lists(_edit, max_size=12))
def test_the_events_view_edits_single_events_as_the_table_did(
    tmp_path_factory, runs: list[int], edits: list[tuple[str, int]]
) -> None:
    """A tool's plain sqlite3 DELETE / UPDATE / INSERT of one event, through the view, on
    any split of runs into segments: the view then holds what a table of rows would."""
    conn, model = _model_db(tmp_path_factory.mktemp("m"), runs)
    with closing(conn):
        for op, seq in edits:
            key = ("o", seq)
            if op == "delete":
                conn.execute("DELETE FROM events WHERE origin = 'o' AND seq = ?", (seq,))
                model.pop(key, None)
            elif op in ("update", "flag") and key in model:
                row = model[key]
                new = (*row[:4], 4, row[5], row[6]) if op == "flag" else (
                    *row[:5], b"\x01" * 32, b"rewritten " + row[6]
                )  # fmt: skip
                conn.execute(
                    "UPDATE events SET flags = ?, hash = ?, raw = ? WHERE origin = 'o' AND seq = ?",
                    (new[4], new[5], new[6], seq),
                )
                model[key] = new
            elif op == "insert" and key not in model:
                row = ("o", seq, 7, "t", 1, b"\x02" * 32, b"put back")
                conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?)", row)
                model[key] = row
        assert conn.execute(ALL_ROWS).fetchall() == [model[k] for k in sorted(model)]
        assert list(segments.rows(conn)) == [model[k] for k in sorted(model)]
        assert segments.count(conn) == len(model)
        by_seq = [model[k] for k in sorted(model)]
        rising = all(a[2] <= b[2] for a, b in itertools.pairwise(by_seq))
        merged = hlc_order.in_hlc_order(conn, ["o"])
        assert (merged is not None) == rising  # an inserted hlc of 7 falls: sorted by SQL
        if merged is not None:
            assert list(merged) == by_seq
        for since in (0, 1010, 1020, 1050):  # hlcs are 1000 + seq, or 7 once put back
            later = [k[1] for k in sorted(model) if model[k][2] >= since]
            assert segments.first_seq_since(conn, "o", since) == (later[0] if later else None)
        for seq in range(1, 170):
            row = model.get(("o", seq))
            assert segments.raw_at(conn, "o", seq) == (row[6] if row else None)
            assert segments.hash_at(conn, "o", seq) == (row[5] if row else None)
            assert segments.hlc_at(conn, "o", seq) == (row[2] if row else None)


@settings(max_examples=40, deadline=None)
@given(
    runs=_runs,
    lo=st.integers(1, 160),
    width=st.integers(0, 100),
)
def test_delete_range_cuts_windows_and_keeps_the_rest(
    tmp_path_factory, runs: list[int], lo: int, width: int
) -> None:
    conn, model = _model_db(tmp_path_factory.mktemp("m"), runs)
    with closing(conn):
        hi = lo + width
        held = [k for k in model if lo <= k[1] <= hi]
        assert segments.delete_range(conn, "o", lo, hi) == len(held)
        for k in held:
            del model[k]
        assert list(segments.rows(conn)) == [model[k] for k in sorted(model)]
        assert list(segments.seqs(conn, "o", 0)) == [k[1] for k in sorted(model)]
        contiguous = [k[1] for k in sorted(model) if k[1] >= 1]
        want = []
        for s in contiguous:  # read_raws stops at the first hole
            if s != 1 + len(want):
                break
            want.append(model[("o", s)][6])
        assert segments.read_raws(conn, "o", 1, 2000) == want


def test_a_tills_own_sales_one_per_commit_are_coalesced(tmp_path: Path) -> None:
    """One-event segments (a sale per commit) are merged as the seqs pass each multiple
    of COALESCE_EVENTS; what is stored and served stays the same, tool edits included."""
    every = segments.COALESCE_EVENTS
    conn, model = _model_db(tmp_path, [1] * (3 * every + 5))
    with closing(conn):
        assert conn.execute("SELECT count(*) FROM segments").fetchone()[0] == 3 + 5
        conn.execute("DELETE FROM events WHERE origin = 'o' AND seq = ?", (3 * every + 2,))
        del model[("o", 3 * every + 2)]
        seq = 3 * every + 5
        for _ in range(every):  # past the hole: merged only back to it
            seq += 1
            row = ("o", seq, 1000 + seq, "t", 0, b"\x03" * 32, b"later %d" % seq)
            segments.write(conn, [row])
            model[("o", seq)] = row
        assert list(segments.rows(conn)) == [model[k] for k in sorted(model)]
        sizes = [n for (n,) in conn.execute(
            "SELECT last_seq - first_seq + 1 FROM segments ORDER BY first_seq"
        )]  # fmt: skip
        # 193 alone (the hole after it), 195..256 merged at 256, 257..261 not yet
        assert sizes == [every] * 3 + [1, every - 2] + [1] * 5


_origin_runs = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 70), st.integers(-30, 60)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    runs=_origin_runs,
    cut_at=st.integers(0, 3000),
    n=st.integers(0, 400),
    scope=st.sampled_from(["abc", "ab", "c"]),
    trim=st.tuples(st.integers(1, 300), st.integers(0, 40)),
)
def test_nth_back_is_the_nth_greatest_key_as_the_view_sorts_it(
    tmp_path_factory, runs: list[tuple[str, int, int]], cut_at: int, n: int, scope: str,
    trim: tuple[int, int],
) -> None:  # fmt: skip
    """`hlc_order.nth_back` (replay's first step) against ORDER BY over the view, on
    several origins whose runs interleave in hlc, whose hlcs may fall within an origin
    (`step` < 0: a clock that went back), with a window cut out of a run."""
    conn = sqlite3.connect(tmp_path_factory.mktemp("n") / "n.db", isolation_level=None)
    segments.create(conn)
    with closing(conn):
        seqs = {"a": 0, "b": 0, "c": 0}
        hlc = 1000
        for origin, size, step in runs:
            rows = []
            for _ in range(size):
                seqs[origin] += 1
                hlc = max(1, hlc + step)
                rows.append((origin, seqs[origin], hlc, "t", 0, b"\0" * 32, b"e"))
            segments.write(conn, rows)
        segments.delete_range(conn, "a", trim[0], trim[0] + trim[1])
        keys = conn.execute("SELECT hlc, origin, seq FROM events").fetchall()
        cut = sorted(keys)[cut_at % len(keys)] if keys and cut_at % 4 else None
        want = sorted(
            (k for k in keys if k[1] in scope and (cut is None or k <= cut)), reverse=True
        )
        expected = want[n - 1] if 0 < n <= len(want) else None
        assert hlc_order.nth_back(conn, n, cut, lambda o: o in scope) == expected
