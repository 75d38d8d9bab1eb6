"""Deterministic conflict detection over the `st_` tables.

`detect(conn, policies)` is a pure function of the set of events folded (and the
policies): replicas holding the same events report the same conflicts with the same
ids, whatever order the events arrived in. Nothing here reads a wall clock.

Conflict id: the first 12 hex digits of blake2b(kind, subject, the involved event ids
sorted by (origin, seq)); the subject is in it because one sale can oversell several
SKUs. An id therefore names exactly one set of events; if more events join
a conflict (a third void, another sale into a negative run) it gets a new id, and a
resolution of the old id no longer applies - except for the running kinds below.

Kinds (subject in brackets):

- `oversell` [sku]: the SKU's stock, replayed in HLC order (every count resets it),
  went below zero. Events: the moves (sales, adjustments) that took or kept it below
  zero, one conflict per negative run. Running kind: if a resolution names a prefix
  of the run, that prefix is the resolved conflict and the rest starts a new one.
  With `oversell="flag_recount"` a stock count after the run resolves it by itself.
- `concurrent_price` [sku]: price writes (product upserts and price sets) of >= 2
  origins with >= 2 distinct prices, chained within the concurrency window. Details
  carry the price the policy makes effective among them. The price.set a
  `choose_price` resolution appends is not itself a conflicting write.
- `double_void` / `double_refund` [sale id]: voids / refunds of one sale from >= 2 tills.
- `over_refund` [sale id]: refunds beyond the sale (amount, a line's qty, a line that
  does not exist), or refunds of a voided sale.
- `refund_unknown_sale` [sale id]: a refund whose sale is not known (yet); it goes
  away by itself when the sale arrives.
- `receipt_collision` [receipt]: one receipt number on several sales.
- `count_during_sales` [sku]: a stock count with moves of that SKU from other origins
  within the window around it (the count may or may not have seen them).
- `clock_skew` [origin]: events this replica flagged as too far ahead of its clock.
  Running kind, per origin. The flag is the receiving replica's own observation, so
  this is the one kind that may differ between replicas.

Cost: each kind is one or a few indexed queries; only oversell needs stock history,
and it replays only the (sku, minute) buckets whose lower bound may go below zero.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby

import msgspec

from tillmesh.conflict.catalog import Write, choose_price
from tillmesh.conflict.policies import Policies
from tillmesh.conflict.stock import bucket_of
from tillmesh.core.clock import COUNTER_BITS, hlc_ms, pack
from tillmesh.core.events import parse_event_id

__all__ = [
    "KINDS",
    "Conflict",
    "Resolution",
    "conflict_id",
    "detect",
    "find_conflict",
    "open_conflict_count",
]

KINDS = (
    "oversell",
    "concurrent_price",
    "double_void",
    "double_refund",
    "over_refund",
    "refund_unknown_sale",
    "receipt_collision",
    "count_during_sales",
    "clock_skew",
)
PREFIX_CHECK_LIMIT = 2000  # longest run whose every prefix is checked for a resolution
_BUCKET_HLC = 60_000 << COUNTER_BITS  # must equal stock.py's bucket width (one minute)

Details = dict[str, int | str]


class Resolution(msgspec.Struct, frozen=True):
    """Who resolved a conflict, how, when (HLC) and why; `event` is the resolving event."""

    event: str
    action: str
    by: str
    reason: str
    hlc: int
    price: int | None = None


class Conflict(msgspec.Struct, frozen=True):
    id: str
    kind: str
    subject: str
    events: list[str]
    details: Details
    resolution: Resolution | None = None

    @property
    def is_open(self) -> bool:
        return self.resolution is None


class _Found(msgspec.Struct, frozen=True):
    """A conflict before its id and resolution are attached."""

    kind: str
    subject: str
    events: list[str]
    details: Details
    auto: Resolution | None = None  # a resolution implied by events (flag_recount)


def _eid_key(eid: str) -> tuple[str, int]:
    return parse_event_id(eid)


def conflict_id(kind: str, subject: str, events: Iterable[str]) -> str:
    """Stable short id: blake2b of kind, subject and the event ids in (origin, seq) order."""
    text = "\n".join([kind, subject, *sorted(set(events), key=_eid_key)])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _sorted(events: Iterable[str]) -> list[str]:
    return sorted(set(events), key=_eid_key)


# --- entry points -----------------------------------------------------------------------


def detect(
    conn: sqlite3.Connection,
    policies: Policies,
    *,
    open_only: bool = False,
    kinds: Iterable[str] = KINDS,
) -> list[Conflict]:
    """Every conflict the folded events show, resolved ones with their resolution,
    sorted by (kind, subject, id)."""
    resolved = _resolutions(conn)
    found: list[Conflict] = []
    for kind in kinds:
        for f in _DETECTORS[kind](conn, policies, resolved):
            cid = conflict_id(f.kind, f.subject, f.events)
            res = resolved.get(cid) or f.auto
            found.append(Conflict(cid, f.kind, f.subject, _sorted(f.events), f.details, res))
    out = sorted(found, key=lambda c: (KINDS.index(c.kind), c.subject, c.id))
    return [c for c in out if c.is_open] if open_only else out


def open_conflict_count(conn: sqlite3.Connection, policies: Policies) -> int:
    """How many conflicts await a decision (for `tillmesh status`)."""
    return len(detect(conn, policies, open_only=True))


def find_conflict(conn: sqlite3.Connection, policies: Policies, cid: str) -> Conflict | None:
    return next((c for c in detect(conn, policies) if c.id == cid), None)


def _resolutions(conn: sqlite3.Connection) -> dict[str, Resolution]:
    """The earliest resolution (by hlc, origin, eid) of each conflict id."""
    out: dict[str, Resolution] = {}
    rows = conn.execute(
        "SELECT conflict, eid, action, by_, reason, hlc, price FROM st_resolutions"
        " ORDER BY conflict, hlc, origin, eid"
    )
    for cid, eid, action, by, reason, hlc, price in rows:
        out.setdefault(cid, Resolution(eid, action, by, reason, hlc, price))
    return out


def _split_resolved(
    kind: str, subject: str, ordered: list[str], resolved: dict[str, Resolution]
) -> Iterator[tuple[list[str], Resolution | None]]:
    """Cut a running conflict's events (in time order) after each prefix a resolution
    names: (resolved chunk, its resolution)..., then the open rest (if any)."""
    start = 0
    if resolved and len(ordered) <= PREFIX_CHECK_LIMIT:
        for end in range(1, len(ordered) + 1):
            res = resolved.get(conflict_id(kind, subject, ordered[start:end]))
            if res is not None:
                yield ordered[start:end], res
                start = end
    if start < len(ordered):
        yield ordered[start:], None


# --- sales, voids, refunds, receipts -------------------------------------------------------


def _grouped(rows: Iterable[tuple[str, str, str]]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(subject, eid, origin) rows sorted by subject -> (subject, [(eid, origin)])."""
    for subject, grp in groupby(rows, key=lambda r: r[0]):
        yield subject, [(r[1], r[2]) for r in grp]


def _double(table: str, kind: str, conn: sqlite3.Connection) -> list[_Found]:
    rows = conn.execute(
        f"SELECT sale_id, eid, origin FROM {table} WHERE sale_id IN (SELECT sale_id FROM"
        f" {table} GROUP BY sale_id HAVING COUNT(DISTINCT origin) > 1) ORDER BY sale_id"
    )
    out = []
    for sale_id, evs in _grouped(rows):
        tills = len({o for _, o in evs})
        out.append(_Found(kind, sale_id, [e for e, _ in evs], {"tills": tills, "count": len(evs)}))
    return out


def _double_void(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    return _double("st_voids", "double_void", conn)


def _double_refund(
    conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]
) -> list[_Found]:
    return _double("st_refunds", "double_refund", conn)


_OVER_REFUND = """
SELECT r.sale_id, s.total, SUM(r.amount), s.nlines,
  EXISTS (SELECT 1 FROM st_voids v WHERE v.sale_id = r.sale_id),
  (SELECT COUNT(*) FROM (SELECT rl.line, SUM(rl.qty) AS q FROM st_refunds r2
     JOIN st_refund_lines rl ON rl.refund_id = r2.eid WHERE r2.sale_id = r.sale_id
     GROUP BY rl.line) t
   WHERE t.line >= s.nlines OR t.q > (SELECT j.value ->> '$.qty' FROM json_each(s.lines) j
     WHERE j.key = t.line)),
  group_concat(r.eid, ' ')
FROM st_refunds r JOIN st_sales s ON s.id = r.sale_id GROUP BY r.sale_id ORDER BY r.sale_id
"""


def _over_refund(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    out = []
    for sale_id, total, refunded, _, voided, bad_lines, eids in conn.execute(_OVER_REFUND):
        why = [w for w, bad in (("amount", refunded > total), ("lines", bad_lines),
                                ("voided", voided)) if bad]  # fmt: skip
        if not why:
            continue
        events = eids.split(" ")
        if voided:
            events += [v for (v,) in conn.execute(
                "SELECT eid FROM st_voids WHERE sale_id = ?", (sale_id,))]  # fmt: skip
        details: Details = {"why": ",".join(why), "sold": total, "refunded": refunded}
        out.append(_Found("over_refund", sale_id, events, details))
    return out


def _refund_unknown(
    conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]
) -> list[_Found]:
    rows = conn.execute(
        "SELECT r.sale_id, r.eid, r.amount FROM st_refunds r WHERE NOT EXISTS"
        " (SELECT 1 FROM st_sales s WHERE s.id = r.sale_id) ORDER BY r.sale_id, r.eid"
    )
    return [_Found("refund_unknown_sale", s, [e], {"amount": a}) for s, e, a in rows]


def _receipts(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    rows = conn.execute(
        "SELECT receipt, id, origin FROM st_sales WHERE receipt IN (SELECT receipt FROM"
        " st_sales GROUP BY receipt HAVING COUNT(*) > 1) ORDER BY receipt"
    )
    out = []
    for receipt, evs in _grouped(rows):
        details: Details = {"sales": len(evs), "tills": len({o for _, o in evs})}
        out.append(_Found("receipt_collision", receipt, [e for e, _ in evs], details))
    return out


# --- catalog ------------------------------------------------------------------------------

_PRICE_WRITES = """
SELECT w.sku, w.eid, w.hlc, w.origin, w.seq, w.kind, w.name, w.price, w.tax_rate_bp, w.active
FROM st_catalog_writes w
WHERE NOT (w.kind = 'price' AND EXISTS (SELECT 1 FROM st_resolutions x
  WHERE x.eid = w.origin || ':' || (w.seq - 1) AND x.action = 'choose_price'))
ORDER BY w.sku, w.hlc, w.origin, w.seq
"""


def _chains(writes: list[Write], window_ms: int) -> Iterator[list[Write]]:
    """Writes (in HLC order) cut wherever two neighbours are more than the window apart."""
    chain: list[Write] = []
    for w in writes:
        if chain and hlc_ms(w.hlc) - hlc_ms(chain[-1].hlc) > window_ms:
            yield chain
            chain = []
        chain.append(w)
    if chain:
        yield chain


def _prices(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    out = []
    for sku, rows in groupby(conn.execute(_PRICE_WRITES), key=lambda row: row[0]):
        writes = [Write(*row[1:]) for row in rows]
        for chain in _chains(writes, p.concurrency_window_ms):
            if len({w.origin for w in chain}) < 2 or len({w.price for w in chain}) < 2:
                continue
            won = choose_price(chain, p.price, p.concurrency_window_ms)
            details: Details = {
                "effective_price": won.price,
                "effective_event": won.eid,
                "policy": p.price,
                "prices": " ".join(f"{w.eid}={w.price}" for w in chain),
            }
            out.append(_Found("concurrent_price", sku, [w.eid for w in chain], details))
    return out


# --- stock ---------------------------------------------------------------------------------


def _window(hlc: int, window_ms: int) -> tuple[int, int]:
    ms = hlc_ms(hlc)
    return pack(max(ms - window_ms, 0), 0), pack(ms + window_ms + 1, 0) - 1


_MOVES_NEAR = "SELECT eid FROM st_moves WHERE sku = ? AND hlc BETWEEN ? AND ?"
_SALES_NEAR = (
    "SELECT s.id FROM st_sales s WHERE s.hlc BETWEEN ? AND ? AND EXISTS"
    " (SELECT 1 FROM json_each(s.lines) j WHERE j.value ->> '$.sku' = ?)"
)


def _counts_during(
    conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]
) -> list[_Found]:
    out = []
    counts = conn.execute("SELECT eid, sku, hlc, origin, count FROM st_counts ORDER BY eid")
    for eid, sku, hlc, origin, count in counts.fetchall():
        lo, hi = _window(hlc, p.concurrency_window_ms)
        near = [e for (e,) in conn.execute(_MOVES_NEAR, (sku, lo, hi))]
        near += [e for (e,) in conn.execute(_SALES_NEAR, (lo, hi, sku))]
        others = [e for e in near if parse_event_id(e)[0] != origin]
        if others:
            details: Details = {"count": count, "moves": len(set(others))}
            out.append(_Found("count_during_sales", sku, [eid, *others], details))
    return out


def _skew(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    rows = conn.execute("SELECT eid, origin, hlc FROM st_skewed ORDER BY origin").fetchall()
    out = []
    for origin, grp in groupby(rows, key=lambda row: row[1]):
        evs = sorted(grp, key=lambda row: _eid_key(row[0]))
        hlcs = {e: h for e, _, h in evs}
        for chunk, _res in _split_resolved("clock_skew", origin, [e for e, _, _ in evs], r):
            details: Details = {"events": len(chunk), "max_hlc": max(hlcs[e] for e in chunk)}
            out.append(_Found("clock_skew", origin, chunk, details))
    return out


# Oversell. Stock history of a SKU = its moves and counts in (hlc, moves first) order,
# each count resetting the level. Replaying all of it would read every sale line, so
# a pass over st_buckets (one row per sku and minute) bounds each minute from below:
# level at its start + its negative moves (all its moves minus the positive ones, which
# are never sale lines and so live in the small st_moves). Only minutes whose bound
# is below zero, and minutes holding a count, are replayed move by move.

Timeline = list[tuple[int, int, str, int, int, str]]  # (hlc, 0 move | 1 count, ...)
CountRow = tuple[int, str, int, int, str]  # (hlc, origin, seq, count, eid)


def _count_rows(conn: sqlite3.Connection) -> dict[str, list[CountRow]]:
    out: dict[str, list[CountRow]] = {}
    for sku, hlc, origin, seq, count, eid in conn.execute(
        "SELECT sku, hlc, origin, seq, count, eid FROM st_counts ORDER BY sku, hlc, origin, seq"
    ):
        out.setdefault(sku, []).append((hlc, origin, seq, count, eid))
    return out


def _candidates(
    conn: sqlite3.Connection, counts: dict[str, list[CountRow]]
) -> dict[str, tuple[dict[int, int], set[int]]]:
    """sku -> (its bucket deltas, the buckets to replay) for SKUs that may go negative."""
    pos: dict[tuple[str, int], int] = {}
    for sku, hlc, delta in conn.execute("SELECT sku, hlc, delta FROM st_moves WHERE delta > 0"):
        key = (sku, bucket_of(hlc))
        pos[key] = pos.get(key, 0) + delta
    out = {}
    rows = conn.execute("SELECT sku, bucket, delta FROM st_buckets ORDER BY sku, bucket")
    for sku, grp in groupby(rows, key=lambda row: row[0]):
        deltas = {b: d for _, b, d in grp}
        in_bucket: dict[int, list[int]] = {}
        for c in counts.get(sku, ()):  # sorted by (hlc, origin, seq): the last one wins
            in_bucket.setdefault(bucket_of(c[0]), []).append(c[3])
        flagged, replay = _scan(deltas, pos, in_bucket, sku)
        if flagged:
            out[sku] = (deltas, replay)
    return out


def _scan(
    deltas: dict[int, int], pos: dict[tuple[str, int], int], in_bucket: dict[int, list[int]],
    sku: str,
) -> tuple[bool, set[int]]:  # fmt: skip
    """(may the SKU go below zero, the buckets to replay move by move: those whose bound
    is below zero and, so the replay stays exact, those holding counts)."""
    lo, flagged, replay = 0, False, set(in_bucket)  # lo: a lower bound of the level
    for b in sorted(deltas.keys() | in_bucket.keys()):
        delta = deltas.get(b, 0)
        neg = delta - pos.get((sku, b), 0)  # the sum of the bucket's negative moves
        cs = in_bucket.get(b)
        if lo + neg < 0:
            flagged = True
            replay.add(b)
        flagged = flagged or (cs is not None and min(cs) + neg < 0)
        lo = lo + delta if cs is None else cs[-1] + neg
    return flagged, replay


Fine = dict[tuple[str, int], Timeline]  # (sku, bucket) -> its moves and counts
_GAP = 30  # flagged minutes closer than this are read in one range scan


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


def _fine(
    conn: sqlite3.Connection, wanted: set[tuple[str, int]], counts: dict[str, list[CountRow]]
) -> Fine:
    """Every move and count of the wanted (sku, bucket)s, each in replay order: one range
    scan of st_sales per run of nearby buckets, not one query per bucket."""
    fine: Fine = {key: [] for key in wanted}
    for sku, hlc, eid, line, d in conn.execute("SELECT sku, hlc, eid, line, delta FROM st_moves"):
        if (sku, bucket_of(hlc)) in wanted:
            fine[(sku, bucket_of(hlc))].append((hlc, 0, eid, line, d, eid))
    for lo, hi in _ranges({b for _, b in wanted}):
        for e, h, ln, sku, q in conn.execute(
            "SELECT s.id, s.hlc, j.key, j.value ->> '$.sku', j.value ->> '$.qty'"
            " FROM st_sales s, json_each(s.lines) j WHERE s.hlc >= ? AND s.hlc < ?",
            (lo * _BUCKET_HLC, (hi + 1) * _BUCKET_HLC),
        ):
            tl = fine.get((sku, h // _BUCKET_HLC))
            if tl is not None:
                tl.append((h, 0, e, int(ln), -int(q), e))
    for sku, b in wanted:
        fine[(sku, b)] += [(h, 1, o, q, n, e) for h, o, q, n, e in counts.get(sku, ())
                           if bucket_of(h) == b]  # fmt: skip
    for tl in fine.values():
        tl.sort()
    return fine


class _Run:
    """A stretch of a SKU's history with stock below zero."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.lowest = 0
        self.ended_by: tuple[int, str, str, int] | None = None  # (hlc, eid, origin, count)


def _replay(sku: str, deltas: dict[int, int], replay: set[int], fine: Fine) -> list[_Run]:
    runs: list[_Run] = []
    run: _Run | None = None
    level = 0
    for b in sorted(deltas.keys() | replay):
        if b not in replay:
            level += deltas.get(b, 0)  # never below zero in here (bound)
            continue
        for hlc, is_count, who, _, n, eid in fine[(sku, b)]:
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


def _oversell(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[_Found]:
    counts = _count_rows(conn)
    candidates = _candidates(conn, counts)
    fine = _fine(conn, {(sku, b) for sku, (_, bs) in candidates.items() for b in bs}, counts)
    out = []
    for sku, (deltas, replay) in sorted(candidates.items()):
        for run in _replay(sku, deltas, replay, fine):
            auto = None
            if p.oversell == "flag_recount" and run.ended_by is not None:
                hlc, eid, who, n = run.ended_by
                auto = Resolution(eid, "recount", who, f"counted {n}", hlc)
            details: Details = {"lowest": run.lowest, "needs_recount": int(
                p.oversell == "flag_recount")}  # fmt: skip
            chunks = list(_split_resolved("oversell", sku, run.events, r))
            for i, (chunk, _res) in enumerate(chunks):
                last = i == len(chunks) - 1
                out.append(_Found("oversell", sku, chunk, details, auto if last else None))
    return out


Detector = Callable[[sqlite3.Connection, Policies, dict[str, Resolution]], list[_Found]]

_DETECTORS: dict[str, Detector] = {
    "oversell": _oversell,
    "concurrent_price": _prices,
    "double_void": _double_void,
    "double_refund": _double_refund,
    "over_refund": _over_refund,
    "refund_unknown_sale": _refund_unknown,
    "receipt_collision": _receipts,
    "count_during_sales": _counts_during,
    "clock_skew": _skew,
}
