"""Stock conflicts: `oversell` and `count_during_sales`, per (store, SKU).

Stock is kept per store (`stock.stock_store` of the event that moves it), so both kinds
are found per (store, sku), from that store's moves and counts only, and carry the store
(in `Conflict.store` and in the id). A till holds its store's events, HQ every store's:
for each store, HQ finds exactly the stock conflicts, with the same ids, that the
store's tills find.

Oversell. The history of a (store, sku) = its moves and counts in (hlc, moves first)
order, each count resetting the level. Replaying all of it would read every sale line,
so a pass over st_buckets (one row per store, sku and minute) bounds each minute from
below: level at its start + its negative moves (all its moves minus the positive ones,
which are never sale lines and so live in the small st_moves). Only minutes whose bound
is below zero, and minutes holding a count, are replayed move by move; their sale lines
are read for just the (store, sku)s flagged, so the replay costs what those went
through, not the whole history (see `_sale_lines`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from itertools import groupby
from operator import itemgetter

import msgspec

from conflict import oversold
from conflict.conflicts import PREFIX_CHECK_LIMIT, Details, Found, Resolution, split_resolved
from conflict.oversold import RUN_ENDS, sku_needle
from conflict.policies import Policies
from conflict.stock import HLC_PER_BUCKET, bucket_of, store_sql
from core.clock import hlc_ms, pack
from core.events import parse_event_id

__all__ = ["counts_during_sales", "kept_oversell", "oversell"]

StockKey = tuple[str, str]  # (store, sku)
CountRow = tuple[int, str, int, int, str]  # (hlc, origin, seq, count, eid)
# (hlc, 0 move | 1 count, eid | origin, line | seq, delta | count, eid): replay order
Step = tuple[int, int, str, int, int, str]


# --- count during sales ----------------------------------------------------------------


def _window(hlc: int, window_ms: int) -> tuple[int, int]:
    ms = hlc_ms(hlc)
    return pack(max(ms - window_ms, 0), 0), pack(ms + window_ms + 1, 0) - 1


_MOVES_NEAR = "SELECT eid FROM st_moves WHERE store = ? AND sku = ? AND hlc BETWEEN ? AND ?"
_SALES_NEAR = (
    f"SELECT s.id FROM st_sales s WHERE s.hlc BETWEEN ? AND ? AND {store_sql('s.origin')} = ?"
    " AND instr(s.lines, ?) AND EXISTS"
    " (SELECT 1 FROM json_each(s.lines) j WHERE j.value ->> '$.sku' = ?)"
)


def counts_during_sales(
    conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]
) -> list[Found]:
    """A count with moves of its (store, sku) from other origins within the window."""
    out = []
    counts = conn.execute("SELECT eid, store, sku, hlc, origin, count FROM st_counts ORDER BY eid")
    for eid, store, sku, hlc, origin, count in counts.fetchall():
        lo, hi = _window(hlc, p.concurrency_window_ms)
        near = [e for (e,) in conn.execute(_MOVES_NEAR, (store, sku, lo, hi))]
        near += [e for (e,) in conn.execute(_SALES_NEAR, (lo, hi, store, sku_needle(sku), sku))]
        others = [e for e in near if parse_event_id(e)[0] != origin]
        if others:
            details: Details = {"count": count, "moves": len(set(others))}
            out.append(Found("count_during_sales", sku, [eid, *others], details, store=store))
    return out


# --- oversell: which minutes may go below zero --------------------------------------------


def _count_rows(conn: sqlite3.Connection) -> dict[StockKey, list[CountRow]]:
    out: dict[StockKey, list[CountRow]] = {}
    for store, sku, hlc, origin, seq, count, eid in conn.execute(
        "SELECT store, sku, hlc, origin, seq, count, eid FROM st_counts"
        " ORDER BY store, sku, hlc, origin, seq"
    ):
        out.setdefault((store, sku), []).append((hlc, origin, seq, count, eid))
    return out


def _positive(conn: sqlite3.Connection) -> dict[StockKey, dict[int, int]]:
    """Sum of the positive moves per (store, sku) and bucket: receipts, restocks, raises."""
    pos: dict[StockKey, dict[int, int]] = {}
    rows = conn.execute("SELECT store, sku, hlc, delta FROM st_moves WHERE delta > 0")
    for store, sku, hlc, delta in rows:
        per = pos.setdefault((store, sku), {})
        b = bucket_of(hlc)
        per[b] = per.get(b, 0) + delta
    return pos


Candidates = dict[StockKey, tuple[dict[int, int], set[int]]]


def _candidates(
    conn: sqlite3.Connection,
    counts: dict[StockKey, list[CountRow]],
    only: set[StockKey] | None = None,
) -> Candidates:
    """(store, sku) -> (its bucket deltas, the buckets to replay), for those that may go
    below zero. One pass over st_buckets in key order: the one part of detection that
    reads every (store, sku, minute) with moves, so it does little per row."""
    pos = _positive(conn)
    out: Candidates = {}
    rows = conn.execute(
        "SELECT sku, store, bucket, delta FROM st_buckets ORDER BY sku, store, bucket"
    )
    for (sku, store), grp in groupby(rows, key=itemgetter(0, 1)):
        key: StockKey = (store, sku)
        if only is not None and key not in only:
            continue
        buckets = [(b, d) for _, _, b, d in grp]
        in_bucket: dict[int, list[int]] = {}
        for c in counts.get(key, ()):  # sorted by (hlc, origin, seq): the last one wins
            in_bucket.setdefault(bucket_of(c[0]), []).append(c[3])
        if in_bucket:
            flagged, replay = _scan_counted(buckets, pos.get(key, {}), in_bucket)
        else:
            replay = _scan(buckets, pos.get(key, {}))
            flagged = bool(replay)
        if flagged:
            out[key] = (dict(buckets), replay)
    return out


def _scan(buckets: list[tuple[int, int]], pos: dict[int, int]) -> set[int]:
    """The buckets, of a never counted (store, sku), whose lower bound is below zero:
    the level at the bucket's start plus all its negative moves."""
    lo, replay = 0, set()
    for b, delta in buckets:
        if lo + delta - pos.get(b, 0) < 0:  # delta - positive moves = the negative ones
            replay.add(b)
        lo += delta
    return replay


def _scan_counted(
    buckets: list[tuple[int, int]], pos: dict[int, int], in_bucket: dict[int, list[int]]
) -> tuple[bool, set[int]]:
    """`_scan` with counts resetting the level: (may it go below zero, the buckets to
    replay: those whose bound is below zero and, so the replay stays exact, those
    holding counts)."""
    deltas = dict(buckets)
    lo, flagged, replay = 0, False, set(in_bucket)  # lo: a lower bound of the level
    for b in sorted(deltas.keys() | in_bucket.keys()):
        delta = deltas.get(b, 0)
        neg = delta - pos.get(b, 0)  # the sum of the bucket's negative moves
        cs = in_bucket.get(b)
        if lo + neg < 0:
            flagged = True
            replay.add(b)
        flagged = flagged or (cs is not None and min(cs) + neg < 0)
        lo = lo + delta if cs is None else cs[-1] + neg
    return flagged, replay


# --- oversell: the flagged minutes, move by move --------------------------------------------

Fine = dict[tuple[str, str, int], list[Step]]  # (store, sku, bucket) -> its moves and counts
_GAP = 30  # flagged minutes closer than this are read in one range scan
# A shared pass parses the JSON of every sale in its minutes; `instr` on one SKU's text
# costs about a third of that per sale (measured), so reading each (store, sku)'s own
# lines wins until their minutes add up to this many times the shared pass's.
_SHARED_COST = 3


def _ranges(buckets: set[int]) -> Iterator[tuple[int, int]]:
    """Sorted buckets merged into (first, last) ranges, bridging small gaps."""
    run: list[int] = []
    for b in sorted(buckets):
        if run and b - run[1] > _GAP:
            yield run[0], run[1]
            run = []
        run = [run[0] if run else b, b]
    if run:
        yield run[0], run[1]


def _hlc_range(lo: int, hi: int) -> tuple[int, int]:
    """Buckets lo..hi (inclusive) as an inclusive HLC range."""
    return lo * HLC_PER_BUCKET, (hi + 1) * HLC_PER_BUCKET - 1


_MOVES_IN = (
    "SELECT hlc, eid, line, delta FROM st_moves"
    " WHERE store = ? AND sku = ? AND hlc >= ? AND hlc <= ?"
)


def _fine(
    conn: sqlite3.Connection,
    wanted: dict[StockKey, set[int]],
    counts: dict[StockKey, list[CountRow]],
) -> Fine:
    """Every move and count of the wanted (store, sku, bucket)s, each in replay order."""
    fine: Fine = {(st, sku, b): [] for (st, sku), bs in wanted.items() for b in bs}
    for (store, sku), buckets in wanted.items():
        for lo, hi in _ranges(buckets):
            for hlc, eid, line, d in conn.execute(_MOVES_IN, (store, sku, *_hlc_range(lo, hi))):
                steps = fine.get((store, sku, bucket_of(hlc)))
                if steps is not None:
                    steps.append((hlc, 0, eid, line, d, eid))
        for h, o, q, n, e in counts.get((store, sku), ()):
            steps = fine.get((store, sku, bucket_of(h)))
            if steps is not None:
                steps.append((h, 1, o, q, n, e))
    for sale, hlc, store, line, sku, qty in _sale_lines(conn, wanted):
        steps = fine.get((store, sku, hlc // HLC_PER_BUCKET))
        if steps is not None:
            steps.append((hlc, 0, sale, int(line), -int(qty), sale))
    for steps in fine.values():
        steps.sort()
    return fine


def _width(ranges: list[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def _sale_lines(
    conn: sqlite3.Connection, wanted: dict[StockKey, set[int]]
) -> Iterator[tuple[str, int, str, int, str, int]]:
    """Sale lines (sale, hlc, store, line, sku, qty) of the wanted (store, sku)s over
    their minutes (a superset: the caller keeps the wanted (store, sku, bucket)s).

    Each (store, sku) reads its own lines, so the cost follows what went below zero -
    unless many went below zero over the same minutes: then one shared pass over those
    minutes costs less, and never more than one read of them.
    """
    own = {key: list(_ranges(bs)) for key, bs in sorted(wanted.items())}
    shared = list(_ranges({b for bs in wanted.values() for b in bs}))
    if sum(_width(r) for r in own.values()) <= _SHARED_COST * _width(shared):
        for (store, sku), ranges in own.items():
            args = (store, sku_needle(sku), sku)
            for lo, hi in ranges:
                yield from conn.execute(oversold.LINES_OF_ONE, (*_hlc_range(lo, hi), *args))
        return
    keys = msgspec.json.encode(sorted(wanted)).decode()
    for lo, hi in shared:
        yield from conn.execute(oversold.LINES_OF_MANY, (*_hlc_range(lo, hi), keys))


# --- oversell: the negative runs ----------------------------------------------------------


class _Run:
    """A stretch of a (store, sku)'s history with stock below zero."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lowest = 0
        self.ended_by: tuple[int, str, str, int] | None = None  # (hlc, eid, origin, count)


def _replay(key: StockKey, deltas: dict[int, int], replay: set[int], fine: Fine) -> list[_Run]:
    store, sku = key
    runs: list[_Run] = []
    run: _Run | None = None
    level = 0
    for b in sorted(deltas.keys() | replay):
        if b not in replay:
            level += deltas.get(b, 0)  # never below zero in here (bound)
            continue
        for hlc, is_count, who, _, n, eid in fine[(store, sku, b)]:
            level = n if is_count else level + n
            if level < 0:
                if run is None:
                    run = _Run()
                    runs.append(run)
                if n < 0 and (not run.events or run.events[-1] != eid):
                    run.events.append(eid)
                run.lowest = min(run.lowest, level)
            elif run is not None:
                run.ended_by = (hlc, eid, who, n) if is_count else None
                run = None
    return runs


def oversell(
    conn: sqlite3.Connection,
    p: Policies,
    r: dict[str, Resolution],
    only: set[StockKey] | None = None,
) -> list[Found]:
    """Each run of a (store, sku) below zero (of those in `only`, if given); running
    kind (see `split_resolved`)."""
    counts = _count_rows(conn)
    candidates = _candidates(conn, counts, only)
    fine = _fine(conn, {key: replay for key, (_, replay) in candidates.items()}, counts)
    recount = p.oversell == "flag_recount"
    out = []
    for (store, sku), (deltas, replay) in sorted(candidates.items()):
        for run in _replay((store, sku), deltas, replay, fine):
            auto = None
            if recount and run.ended_by is not None:
                hlc, eid, who, n = run.ended_by
                auto = Resolution(eid, "recount", who, f"counted {n}", hlc)
            details: Details = {"lowest": run.lowest, "needs_recount": int(recount)}
            chunks = list(split_resolved("oversell", sku, run.events, r, store))
            for i, (chunk, _res) in enumerate(chunks):
                last = i == len(chunks) - 1
                out.append(Found("oversell", sku, chunk, details, auto if last else None, store))
    return out


# --- oversell: the runs the fold keeps ------------------------------------------------


def kept_oversell(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    """`oversell` from the runs the fold keeps (`oversold.py`): the same conflicts,
    without replaying any history. Each run's events are read in (origin, seq) order
    by SQLite; in time order only if a resolution may name a prefix of them."""
    recount = p.oversell == "flag_recount"
    held = oversold.held(conn)  # replayed in full: their kept rows lag
    out = oversell(conn, p, r, only=held) if held else []
    for (sku, store), bounds, end in _kept_runs(conn):
        if (store, sku) in held:
            continue
        auto = None
        if recount and end is not None:
            hlc, eid, who, n = end
            auto = Resolution(eid, "recount", who, f"counted {n}", hlc)
        lowest, ids = _run_of(conn, bounds)
        details: Details = {"lowest": lowest, "needs_recount": int(recount)}
        if not r or len(ids) > PREFIX_CHECK_LIMIT:  # no prefix can be resolved
            out.append(Found("oversell", sku, ids, details, auto, store, ordered=True))
            continue
        timeline = _timeline(conn, bounds)
        chunks = list(split_resolved("oversell", sku, timeline, r, store))
        for i, (chunk, _res) in enumerate(chunks):
            last = i == len(chunks) - 1
            out.append(Found("oversell", sku, chunk, details, auto if last else None, store))
    return out


# (sku, store, run_hlc, run_eid, run_line) and the next run's (hlc, eid, line) or None
Bounds = tuple[str, str, int, str, int, tuple[int, str, int] | None]
_IN_RUN = "sku = ?1 AND store = ?2 AND (hlc, eid, line) >= (?3, ?4, ?5)"
_BEFORE_NEXT = " AND (hlc, eid, line) < (?6, ?7, ?8)"
# (origin, seq) order of event ids, in SQL: an id is origin:seq, an origin holds no ':'
# (`core.body_base.EventId`) and a seq no leading zero, so within one origin a longer
# id has the greater seq, and ids of one length compare as their seqs do.
_BY_ID = "substr(eid, 1, instr(eid, ':') - 1), length(eid), eid"


def _kept_runs(
    conn: sqlite3.Connection,
) -> Iterator[tuple[tuple[str, str], Bounds, tuple[int, str, str, int] | None]]:
    """Each kept run: its (sku, store), where its moves lie, the count that ended it."""
    rows = conn.execute(RUN_ENDS + " ORDER BY sku, store, run_hlc, run_eid, run_line").fetchall()
    for i, (sku, store, rh, re, rl, eh, ee, eo, ec) in enumerate(rows):
        after = rows[i + 1] if i + 1 < len(rows) else None
        upto = None if after is None or after[:2] != (sku, store) else tuple(after[2:5])
        end = None if eh is None else (eh, ee, eo, ec)
        yield (sku, store), (sku, store, rh, re, rl, upto), end


def _where(bounds: Bounds) -> tuple[str, tuple[object, ...]]:
    *start, upto = bounds
    if upto is None:
        return _IN_RUN, tuple(start)
    return _IN_RUN + _BEFORE_NEXT, (*start, *upto)


def _run_of(conn: sqlite3.Connection, bounds: Bounds) -> tuple[int, list[str]]:
    """A run's lowest level and its distinct events in (origin, seq) order."""
    where, args = _where(bounds)
    lowest = conn.execute(f"SELECT MIN(level) FROM st_oversold WHERE {where}", args)
    ids = conn.execute(f"SELECT eid FROM st_oversold WHERE {where} ORDER BY {_BY_ID}", args)
    return int(lowest.fetchone()[0]), list(dict.fromkeys(e for (e,) in ids))  # distinct


def _timeline(conn: sqlite3.Connection, bounds: Bounds) -> list[str]:
    """A run's events in replay order, a sale's lines of one SKU once."""
    where, args = _where(bounds)
    events: list[str] = []
    for (eid,) in conn.execute(
        f"SELECT eid FROM st_oversold WHERE {where} ORDER BY hlc, eid, line", args
    ):
        if not events or events[-1] != eid:
            events.append(eid)
    return events
