"""Deterministic conflict detection over the `st_` tables.

`detect(conn, policies)` is a pure function of the set of events folded (and the
policies): replicas holding the same events report the same conflicts with the same
ids, whatever order the events arrived in. Nothing here reads a wall clock.

Conflict id: the first 12 hex digits of blake2b(kind, [store,] subject, the involved
event ids sorted by (origin, seq)), see `conflicts.py`. An id therefore names exactly
one set of events; if more events join a conflict (a third void, another sale into a
negative run) it gets a new id, and a resolution of the old id no longer applies -
except for the running kinds below.

Kinds (subject in brackets). Stock is kept per store, so the two stock kinds are found
per (store, sku) and carry their store (`Conflict.store`, and in the id): HQ reports, for
each store, the same stock conflicts with the same ids as the store's tills
(`detect_stock.py`).

- `oversell` [sku, per store]: the store's stock of the SKU, replayed in HLC order
  (every count resets it), went below zero. Events: the moves (sales, adjustments)
  that took or kept it below zero, one conflict per negative run. Running kind: if a
  resolution names a prefix of the run, that prefix is the resolved conflict and the
  rest starts a new one. With `oversell="flag_recount"` a stock count of the SKU in
  the store after the run resolves it by itself.
- `concurrent_price` [sku]: price writes (product upserts and price sets) of >= 2
  origins with >= 2 distinct prices, chained within the concurrency window, among
  the writes that compete for one store's price: the chain's and that store's own
  (`price_of` in the details). Details carry the price the policy makes effective. The price.set a
  `choose_price` resolution appends is not itself a conflicting write.
- `double_void` / `double_refund` [sale id]: voids / refunds of one sale from >= 2 tills.
- `over_refund` [sale id]: refunds beyond the sale (amount, a line's qty, a line that
  does not exist), or refunds of a voided sale.
- `refund_unknown_sale` [sale id]: a refund whose sale is not known (yet); it goes
  away by itself when the sale arrives.
- `receipt_collision` [receipt]: one receipt number on several sales.
- `count_during_sales` [sku, per store]: a stock count with moves of that SKU in its
  store from other origins within the window around it (the count may or may not
  have seen them).
- `card_declined` [payment id]: a card payment taken offline (deferred) that the
  processor declined, or that expired unforwarded (`st_card_status`), of a sale not
  voided: the store is owed its amount. Event: the sale (so a second till's copy of
  the outcome does not change the id). Details: store, till, cashier, receipt, amount,
  outcome, why, and who approved it beyond the floor limits if anyone did. It goes
  away by itself if a capture of the payment arrives (captured takes precedence).

- `catalog_override` [sku]: writes of the SKU that a `supersede` resolution took out
  of the catalog whatever their HLC (`conflict.catalog`); never open: it exists only
  as its resolution, so the listing shows who overrode what, when and why. Superseded
  writes take no part in `concurrent_price` either.

A clock far ahead is not a conflict: whether a timestamp is "too far ahead" is each
receiver's judgement by its own wall clock, and conflicts are a function of the events
alone. Each log reports what it saw as an observation (`EventLog.clock_ahead`, shown by
`tillmesh status`), and a catalog write dated far ahead is overridden by a manager's
`supersede` (`tillmesh resolve DB catalog:SKU --action supersede --supersedes ID`).

Cost: each kind is one or a few indexed queries. Oversell is read from the runs the
fold keeps (`oversold.py`); the full replay (`recompute`, and a state that keeps no
runs) replays only the (store, sku, minute) buckets whose lower bound may go below zero.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from itertools import groupby

from conflict.catalog import SUPERSEDED, Write, by_store, choose_price, is_chain, may_supersede
from conflict.conflicts import (
    Conflict,
    Details,
    Detector,
    Found,
    Resolution,
    conflict_id,
    id_of_sorted,
    sorted_events,
)
from conflict.detect_stock import counts_during_sales, kept_oversell, oversell
from conflict.oversold import kept
from conflict.policies import Policies
from core.clock import hlc_ms

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
    "catalog_override",
    "card_declined",
)
# --- entry points -----------------------------------------------------------------------


def detect(
    conn: sqlite3.Connection,
    policies: Policies,
    *,
    open_only: bool = False,
    kinds: Iterable[str] = KINDS,
    recompute: bool = False,
) -> list[Conflict]:
    """Every conflict the folded events show, resolved ones with their resolution,
    sorted by (kind, store, subject, id). Oversells are read from the runs the fold
    keeps (`oversold.py`) where it keeps them; `recompute` replays the stock history."""
    every = _resolutions(conn)
    resolved = {cid: rs[0] for cid, rs in every.items()}
    detectors = dict(_DETECTORS)
    if not recompute and kept(conn):
        detectors["oversell"] = kept_oversell
    found: list[Conflict] = []
    for kind in kinds:
        for f in detectors[kind](conn, policies, resolved):
            events = f.events if f.ordered else sorted_events(f.events)
            cid = id_of_sorted(f.kind, f.subject, events, f.store)
            res = resolved.get(cid) or f.auto
            later = every.get(cid, [])[1:]
            found.append(Conflict(cid, f.kind, f.subject, events, f.details, res, f.store, later))
    out = sorted(found, key=lambda c: (KINDS.index(c.kind), c.store or "", c.subject, c.id))
    return [c for c in out if c.is_open] if open_only else out


def open_conflict_count(conn: sqlite3.Connection, policies: Policies) -> int:
    """How many conflicts await a decision (for `tillmesh status`)."""
    return len(detect(conn, policies, open_only=True))


def find_conflict(conn: sqlite3.Connection, policies: Policies, cid: str) -> Conflict | None:
    return next((c for c in detect(conn, policies) if c.id == cid), None)


_RESOLUTIONS = """
SELECT r.conflict, r.eid, r.action, r.by_, r.reason, r.hlc, r.price,
  (SELECT group_concat(CASE e.kind
     WHEN 'move' THEN e.sku || printf('%+d', e.n) || '@' || e.store
     WHEN 'count' THEN 'count ' || e.sku || '=' || e.n || '@' || e.store
     ELSE 'price ' || e.sku || '=' || e.n END, ' ')
   FROM (SELECT * FROM st_effects WHERE eid = r.eid ORDER BY idx) e)
FROM st_resolutions r ORDER BY r.conflict, r.hlc, r.origin
"""


def _resolutions(conn: sqlite3.Connection) -> dict[str, list[Resolution]]:
    """Every resolution of each conflict id, the effective one (the earliest by hlc,
    origin: `effects.py`) first, the superseded ones after it."""
    out: dict[str, list[Resolution]] = {}
    for cid, eid, action, by, reason, hlc, price, effect in conn.execute(_RESOLUTIONS):
        res = Resolution(eid, action, by, reason, hlc, price, effect or "")
        out.setdefault(cid, []).append(res)
    return out


# --- sales, voids, refunds, receipts -------------------------------------------------------


def _grouped(rows: Iterable[tuple[str, str, str]]) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(subject, eid, origin) rows sorted by subject -> (subject, [(eid, origin)])."""
    for subject, grp in groupby(rows, key=lambda r: r[0]):
        yield subject, [(r[1], r[2]) for r in grp]


def _double(table: str, kind: str, conn: sqlite3.Connection) -> list[Found]:
    rows = conn.execute(
        f"SELECT sale_id, eid, origin FROM {table} WHERE sale_id IN (SELECT sale_id FROM"
        f" {table} GROUP BY sale_id HAVING COUNT(DISTINCT origin) > 1) ORDER BY sale_id"
    )
    out = []
    for sale_id, evs in _grouped(rows):
        tills = len({o for _, o in evs})
        out.append(Found(kind, sale_id, [e for e, _ in evs], {"tills": tills, "count": len(evs)}))
    return out


def _double_void(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    return _double("st_voids", "double_void", conn)


def _double_refund(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
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


def _over_refund(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
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
        out.append(Found("over_refund", sale_id, events, details))
    return out


def _refund_unknown(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    rows = conn.execute(
        "SELECT r.sale_id, r.eid, r.amount FROM st_refunds r WHERE NOT EXISTS"
        " (SELECT 1 FROM st_sales s WHERE s.id = r.sale_id) ORDER BY r.sale_id, r.eid"
    )
    return [Found("refund_unknown_sale", s, [e], {"amount": a}) for s, e, a in rows]


def _receipts(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    rows = conn.execute(
        "SELECT receipt, id, origin FROM st_sales WHERE receipt IN (SELECT receipt FROM"
        " st_sales GROUP BY receipt HAVING COUNT(*) > 1) ORDER BY receipt"
    )
    out = []
    for receipt, evs in _grouped(rows):
        details: Details = {"sales": len(evs), "tills": len({o for _, o in evs})}
        out.append(Found("receipt_collision", receipt, [e for e, _ in evs], details))
    return out


# --- catalog ------------------------------------------------------------------------------

# A choose_price's price is no new conflicting write: before schema 5 the price.set
# right after the resolution, since then the resolution itself (`effects.py`).
_PRICE_WRITES = f"""
SELECT w.sku, w.eid, w.hlc, w.origin, w.seq, w.kind, w.name, w.price, w.tax_rate_bp, w.active
FROM st_catalog_writes w
WHERE NOT (w.kind = 'price' AND EXISTS (SELECT 1 FROM st_resolutions x
  WHERE x.eid IN (w.origin || ':' || (w.seq - 1), w.eid) AND x.action = 'choose_price'))
  AND NOT {SUPERSEDED}
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


def _prices(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    """Per store: the chain's writes and the store's own compete for its price (a
    store's override never meets another store's: `catalog.py`)."""
    out = []
    for sku, rows in groupby(conn.execute(_PRICE_WRITES), key=lambda row: row[0]):
        writes = [Write(*row[1:]) for row in rows]
        chain = [w for w in writes if is_chain(w)]
        for store, own in sorted(by_store(writes).items()):
            mixed = sorted(chain + own, key=lambda w: (w.hlc, w.origin, w.seq))
            out += _concurrent_prices(sku, store, mixed, p)
    return out


def _concurrent_prices(sku: str, store: str, writes: list[Write], p: Policies) -> list[Found]:
    out = []
    for chain in _chains(writes, p.concurrency_window_ms):
        if len({w.origin for w in chain}) < 2 or len({w.price for w in chain}) < 2:
            continue
        won = choose_price(chain, p.price, p.concurrency_window_ms)
        details: Details = {
            "effective_price": won.price,
            "effective_event": won.eid,
            "policy": p.price,
            "prices": " ".join(f"{w.eid}={w.price}" for w in chain),
            "price_of": store,
        }
        out.append(Found("concurrent_price", sku, [w.eid for w in chain], details))
    return out


_OVERRIDES = """
SELECT r.eid, r.by_, r.reason, r.hlc, r.origin, x.eid, w.sku, w.origin
FROM st_resolutions r JOIN st_superseded x ON x.by_eid = r.eid
LEFT JOIN st_catalog_writes w ON w.eid = x.eid
WHERE r.action = 'supersede' ORDER BY r.eid, x.eid
"""


def _overrides(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    """Each supersede resolution that took out a write here, as its own resolved
    conflict (one that may supersede none of what arrived is not listed: it did nothing)."""
    out, seen = [], set()
    for eid, grp in groupby(conn.execute(_OVERRIDES), key=lambda row: row[0]):
        rows = list(grp)
        _, by, reason, hlc, by_origin = rows[0][:5]
        took = sorted({sku for *_, sku, origin in rows
                       if sku is not None and may_supersede(by_origin, origin)})  # fmt: skip
        events = [row[5] for row in rows]
        if not took or (took[0], *events) in seen:  # did nothing, or one listed already
            continue
        seen.add((took[0], *events))
        auto = Resolution(eid, "supersede", by, reason, hlc)
        out.append(Found("catalog_override", took[0], events, {"superseded": len(events)}, auto))
    return out


# --- card payments -------------------------------------------------------------------------

_DECLINED = """
SELECT payment, sale_id, store, till, cashier, receipt, amount, outcome, detail, override_by
FROM st_card_status WHERE outcome IN ('declined', 'expired')
  AND sale_id NOT IN (SELECT sale_id FROM st_voids)
ORDER BY payment
"""


def _card_declined(conn: sqlite3.Connection, p: Policies, r: dict[str, Resolution]) -> list[Found]:
    out = []
    for pid, sale, store, till, cashier, receipt, amount, outcome, why, override in conn.execute(
        _DECLINED
    ):
        details: Details = {
            "store": store, "till": till, "cashier": cashier, "receipt": receipt,
            "amount": amount, "outcome": outcome, "why": why or outcome,
        }  # fmt: skip
        if override:
            details["override_by"] = override
        out.append(Found("card_declined", pid, [sale], details))
    return out


_DETECTORS: dict[str, Detector] = {
    "oversell": oversell,
    "concurrent_price": _prices,
    "double_void": _double_void,
    "double_refund": _double_refund,
    "over_refund": _over_refund,
    "refund_unknown_sale": _refund_unknown,
    "receipt_collision": _receipts,
    "count_during_sales": counts_during_sales,
    "catalog_override": _overrides,
    "card_declined": _card_declined,
}
