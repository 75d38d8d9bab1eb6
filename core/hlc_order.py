"""The stored events in (hlc, origin, seq) order, read from the segments without the
`events` view: forward from a version vector (replay, checkpoints) and the n-th back
from a cut (replay's steps).

Through the view either would expand every segment's JSON index into rows and sort
them all (`log replay` on a 1M-event log: 0.75 s of its 3.1 s CPU for the steps' start
alone); here each origin's events are merged as stored, or only the segments whose
hlc bounds can hold the answer are read.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping

from core.segments import EventRow, decode_index, rows

__all__ = ["Key", "in_hlc_order", "nth_back"]

Key = tuple[int, str, int]  # (hlc, origin, seq): the order replay folds in


def in_hlc_order(
    conn: sqlite3.Connection, of: Iterable[str], after: Mapping[str, int] | None = None
) -> Iterator[EventRow] | None:
    """The stored events of the origins `of`, past seq `after[origin]`, in (hlc, origin,
    seq) order: each origin's events as stored (seq order) merged, no sort. None if some
    origin's hlcs do not rise with its seqs (a clock that went back, a log a tool
    edited): the caller sorts then (the `events` view, ORDER BY hlc, origin, seq)."""
    after = after or {}
    names = list(of)
    if not all(_hlcs_rise(conn, o, after.get(o, 0)) for o in names):
        return None
    streams = [rows(conn, o, after.get(o, 0)) for o in names]
    return heapq.merge(*streams, key=_hlc_order)


def _hlc_order(row: EventRow) -> Key:
    return row[2], row[0], row[1]


def _hlcs_rise(conn: sqlite3.Connection, origin: str, after: int) -> bool:
    """Whether `origin`'s hlcs never fall as its seqs rise past `after` (reads the
    segments' indexes, not their bytes)."""
    last = -1
    for first, final, skip, idx in conn.execute(
        "SELECT first_seq, last_seq, skip, idx FROM segments WHERE origin = ? AND last_seq > ?"
        " ORDER BY first_seq",
        (origin, after),
    ):
        entries = decode_index(idx)
        for k in range(skip + max(first, after + 1) - first, skip + final - first + 1):
            hlc = entries[k][2]
            if hlc < last:
                return False
            last = hlc
    return True


def nth_back(
    conn: sqlite3.Connection, n: int, cut: Key | None, keep: Callable[[str], bool]
) -> Key | None:
    """The n-th greatest (hlc, origin, seq) at or below `cut` (None: no bound) among the
    stored events of the origins `keep` accepts; None if there are fewer than n (or n
    is not positive).

    Segments are visited by their hlc upper bound, highest first, keeping the n
    greatest keys seen; once n are kept and a segment's bound is below the n-th's hlc,
    no segment left can hold a greater key. Any hlc order within an origin is fine
    (a clock that went back, a tool's edit): only the bounds are relied on, and they
    are kept when a window is cut out of a run, so they stay bounds."""
    if n <= 0:
        return None
    where, params = ("WHERE hlc_lo <= ?", (cut[0],)) if cut is not None else ("", ())
    bounds = conn.execute(
        f"SELECT id, origin, hlc_hi FROM segments {where} ORDER BY hlc_hi DESC", params
    ).fetchall()
    kept: list[Key] = []  # a min-heap: kept[0] is the n-th greatest so far
    for segment_id, origin, hlc_hi in bounds:
        if len(kept) == n and hlc_hi < kept[0][0]:
            break
        if keep(origin):
            for key in _keys(conn, segment_id, origin):
                if cut is not None and key > cut:
                    continue
                if len(kept) < n:
                    heapq.heappush(kept, key)
                elif key > kept[0]:
                    heapq.heapreplace(kept, key)
    return kept[0] if len(kept) == n else None


def _keys(conn: sqlite3.Connection, segment_id: int, origin: str) -> Iterator[Key]:
    """The (hlc, origin, seq) of each event in one segment's window."""
    first, last, skip, idx = conn.execute(
        "SELECT first_seq, last_seq, skip, idx FROM segments WHERE id = ?", (segment_id,)
    ).fetchone()
    entries = decode_index(idx)
    for seq in range(first, last + 1):
        yield entries[skip + seq - first][2], origin, seq
