"""Per-event cost of each ingest stage, in thread CPU time (robust on a shared machine).

Run: .venv/bin/python -m tests.bench.ingest_profile [events] [--stages | --settle]
Prints µs/event for envelope decode, hash, re-encode, body decode+validate and all of
`check_events` (done in the caller's thread), then the writer's durable transaction
without and with the fold, plus the same bytes through raw sqlite3 executemany, and
`sqlite_floor`: the rows tillmesh itself wrote for those events, replayed through raw
sqlite3 into the same schema (what SQLite alone costs for this layout, with no Python).
"""

from __future__ import annotations

import collections
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from conflict import oversold
from conflict.state import StoreState
from core import segments
from core.batch import IngestResult, check_events
from core.clock import HybridClock, system_wall_ms
from core.events import Event, decode_body, decode_event, encode_event, event_hash
from core.log import EventLog, _Request
from core.sqlite import open_sync
from tests.factories import cash_sale, chain

BATCH = 2000
# The rows a folded sale costs in this layout: its share of its run's segment and its
# sales-register row (the stock tables get one upsert per SKU and minute per batch, not
# per sale).
FLOOR_TABLES = ("segments", "st_sales")


def events(n: int) -> list[Event]:
    out: list[Event] = []
    for t in range(5):  # five tills' chains, as the ingest benchmark delivers them
        out += chain(
            f"s1/t{t + 2}",
            [cash_sale(sku=f"SKU-{i % 300}", receipt=f"R{i}") for i in range(n // 5)],
        )
    return out


def per_event(fn: Callable[[], object], n: int, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best / n * 1e6


def raw_sqlite(path: Path, evs: list[Event], raws: list[bytes]) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (o TEXT, s INTEGER, v BLOB, PRIMARY KEY (o, s)) WITHOUT ROWID")
    rows = [(e.origin, e.seq, r) for e, r in zip(evs, raws, strict=True)]
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows[i : i + BATCH])
        conn.execute("COMMIT")
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    conn.close()
    return wall / len(rows) * 1e6, cpu / len(rows) * 1e6


def sqlite_floor(src: Path, dst: Path, tables: tuple[str, ...]) -> float:
    """µs/event (wall) for raw sqlite3 to write the rows of `tables` that a real ingest
    wrote into `src`, into an empty log of the same schema, in BATCH events' worth per
    commit, durably (a table of one row per run, `segments`, gets its rows spread over
    the same number of commits).

    This is the storage floor of the layout: no decoding, checking, chaining or folding,
    only the inserts (with the schema's keys and indexes) and the commits.
    """
    state = StoreState()
    log = EventLog(dst, "s1/t1", state, HybridClock(system_wall_ms), lambda o: True,
                   system_wall_ms)  # fmt: skip
    conn = open_sync(dst)
    log._prepare(conn)  # the log's and the fold's tables, indexes and all
    source = open_sync(src, readonly=True)
    # in the order the ingest received them (its chains one after another)
    rows = {t: source.execute(f"SELECT * FROM {t} ORDER BY {_ORDER[t]}").fetchall() for t in tables}
    n = segments.count(source)
    source.close()
    inserts = {t: f"INSERT INTO {t} VALUES ({','.join('?' * len(rows[t][0]))})" for t in tables}
    commits = -(-n // BATCH)
    t0 = time.perf_counter()
    for k in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        for t in tables:
            part = len(rows[t])
            conn.executemany(inserts[t], rows[t][k * part // commits : (k + 1) * part // commits])
        conn.execute("COMMIT")
    wall = time.perf_counter() - t0
    conn.close()
    return wall / n * 1e6


_ORDER = {"segments": "origin, first_seq", "st_sales": "origin, seq"}


class TimedConnection:
    """A sqlite3 connection that adds each statement's thread CPU to `spent[sql]`."""

    def __init__(self, conn: sqlite3.Connection, spent: collections.Counter[str]) -> None:
        self.conn, self.spent = conn, spent

    def _timed(self, fn: Callable[..., object], sql: str, *args: object) -> object:
        t0 = time.thread_time()
        try:
            return fn(sql, *args)
        finally:
            self.spent[" ".join(sql.split())[:56]] += time.thread_time() - t0

    def execute(self, sql: str, *args: object) -> object:
        return self._timed(self.conn.execute, sql, *args)

    def executemany(self, sql: str, *args: object) -> object:
        return self._timed(self.conn.executemany, sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.conn, name)


def log_ingest(
    path: Path,
    evs: list[Event],
    fold: bool = True,
    spent: collections.Counter[str] | None = None,
    triggers: bool = True,
) -> tuple[float, float]:
    state = StoreState()
    log = EventLog(path, "s1/t1", state, HybridClock(system_wall_ms), lambda o: True,
                   system_wall_ms)  # fmt: skip
    conn = open_sync(path)
    log._prepare(conn)
    if not triggers:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for (name,) in names:
            conn.execute(f"DROP TRIGGER {name}")
    if spent is not None:
        conn = TimedConnection(conn, spent)  # type: ignore[assignment]
    if not fold:
        state.apply = lambda conn, batch: None  # type: ignore[method-assign]
    checked = [check_events(evs[i : i + BATCH], {}) for i in range(0, len(evs), BATCH)]
    t0, c0 = time.perf_counter(), time.thread_time()
    for chunk in checked:
        req = _Request(None, ingest=chunk)  # type: ignore[arg-type]
        results, staged = log._transaction(conn, [req])
        res = results[0]
        assert isinstance(res, IngestResult) and not res.rejected and not res.held
        log._heads.update(staged)
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    conn.close()
    return wall / len(evs) * 1e6, cpu / len(evs) * 1e6


def stages(evs: list[Event], d: Path) -> None:
    n = len(evs)
    for triggers in (True, False):
        spent: collections.Counter[str] = collections.Counter()
        _, cpu = log_ingest(d / f"stages-{triggers}.db", evs, spent=spent, triggers=triggers)
        sql = sum(spent.values()) / n * 1e6
        print(f"writer thread, digest triggers {'on' if triggers else 'off'}: {cpu:.2f} cpu,"
              f" of it SQL {sql:.2f}, Python {cpu - sql:.2f}")  # fmt: skip
        for statement, seconds in spent.most_common(8):
            print(f"  {seconds / n * 1e6:6.2f}  {statement}")


def settle(evs: list[Event], d: Path) -> None:
    """After the five tills' interleaved sales (a catch-up's frames), the oversell runs
    the fold held back, settled a slice per transaction as the idle writer does."""
    _, cpu = log_ingest(d / "settle.db", evs)
    conn = open_sync(d / "settle.db")
    fold, slices, worst = StoreState(), 0, 0.0
    held = len(oversold.held(conn))
    t0 = time.perf_counter()
    more = True
    while more:
        t = time.perf_counter()
        conn.execute("BEGIN")
        more = fold.settle(conn)
        conn.execute("COMMIT")
        worst, slices = max(worst, time.perf_counter() - t), slices + 1
    conn.close()
    print(f"{len(evs):,} events ingested, writer {cpu:.2f} µs/event CPU; {held} SKUs held;")
    print(f"settled in {slices} slices, {time.perf_counter() - t0:.2f} s, worst slice"
          f" {worst * 1e3:.1f} ms")  # fmt: skip


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 50_000
    evs = events(n)
    if "--stages" in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            stages(evs, Path(d))
        return
    if "--settle" in sys.argv:
        with tempfile.TemporaryDirectory() as d:
            settle(evs, Path(d))
        return
    raws = [encode_event(e) for e in evs]
    print(f"{n} events, µs/event (thread CPU, best of 3)")
    print(f"  decode_event      {per_event(lambda: [decode_event(r) for r in raws], n):6.2f}")
    print(f"  event_hash        {per_event(lambda: [event_hash(e) for e in evs], n):6.2f}")
    print(f"  encode_event      {per_event(lambda: [encode_event(e) for e in evs], n):6.2f}")
    print(f"  decode_body       {per_event(lambda: [decode_body(e) for e in evs], n):6.2f}")
    check = per_event(lambda: check_events(evs, {}), n)
    print(f"  check_events      {check:6.2f}  (caller's thread)")
    print("writer thread only (events already checked):")
    with tempfile.TemporaryDirectory() as d:
        for j, (name, fn) in enumerate(
            (
                ("raw sqlite3", lambda p: raw_sqlite(p, evs, raws)),
                ("ingest, no fold", lambda p: log_ingest(p, evs, fold=False)),
                ("ingest + fold", lambda p: log_ingest(p, evs)),
            )
        ):
            walls, cpus = [], []
            for k in range(2):
                w, c = fn(Path(d) / f"{j}-{k}.db")
                walls.append(w)
                cpus.append(c)
            w, c = min(walls), min(cpus)
            print(f"  {name:<17} {c:6.2f} cpu  {w:6.2f} wall  ({1e6 / w:,.0f} ev/s)")
        floor = sqlite_floor(Path(d) / "2-0.db", Path(d) / "floor.db", FLOOR_TABLES)
        print(f"  sqlite floor      {floor:6.2f} wall  ({1e6 / floor:,.0f} ev/s): the segments")
        print("                    and st_sales rows above, raw sqlite3, same schema")


if __name__ == "__main__":
    main()
