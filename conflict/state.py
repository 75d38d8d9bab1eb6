"""`StoreState`: the `StateFold` that turns batches of accepted events into store state.

Law: for any set E of events, applying E in any order, split into batches anyhow, any
event any number of times, yields the same tables (checked by `state_digest` in the
tests). Three things make that hold:

- idempotence per event: `st_seen` holds (origin, seq) of every folded event, and a
  batch first drops the events already folded (and duplicates within the batch);
- every table is keyed by event id or a natural key, never by arrival order;
- state that depends on several events is a join-semilattice value kept with its
  inputs: stock is a reset-counter (`stock.py`), the product a policy over all writes
  (`catalog.py`), restock-on-void the earliest void (`links.py`), shifts the earliest
  open / latest close.

Speed: the log calls `apply` inside its one transaction per batch. The common events
(sales of any SKU, stock receipts and adjustments) are gathered into per-table row
lists and written with one `executemany` per table, and their stock deltas summed per
(store, SKU) into one upsert row each; no per-event SELECT. Counts, voids, refunds and
catalog writes are rare and may query per event.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import Sequence

import msgspec

from conflict import cards, catalog, effects, links, oversell_settle, oversold, schema, stock
from conflict.catalog import PricePolicy
from core import digest
from core.events import (
    Body,
    CardCaptured,
    CardDeclined,
    CardExpired,
    CardLimitsSet,
    ConflictResolved,
    Event,
    Payment,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    SaleCompleted,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
)
from core.fold import FLAG_UNAPPLIED, Accepted

__all__ = ["DEFAULT_WINDOW_MS", "StoreState"]

DEFAULT_WINDOW_MS = 5_000  # writes this close in HLC wall time count as concurrent
CATALOG_RULES = "store-prices"  # how writes are read (fold 8); a snapshot's older rules differ

Row = tuple[object, ...]

_MAX_SEQ = 1 << 62
_json = msgspec.json.Encoder().encode

# Earliest open / latest close per shift, by (hlc, origin, seq): a semilattice, so the
# upsert's result does not depend on which event arrived first.
_SHIFT_OPEN = """
INSERT INTO st_shift_open VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
ON CONFLICT (shift) DO UPDATE SET eid = ?2, hlc = ?3, origin = ?4, seq = ?5,
    float_amount = ?6, cashier = ?7
WHERE (?3, ?4, ?5) < (st_shift_open.hlc, st_shift_open.origin, st_shift_open.seq)
"""
_SHIFT_CLOSE = """
INSERT INTO st_shift_close VALUES (?1, ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (shift) DO UPDATE SET eid = ?2, hlc = ?3, origin = ?4, seq = ?5, counted_cash = ?6
WHERE (?3, ?4, ?5) > (st_shift_close.hlc, st_shift_close.origin, st_shift_close.seq)
"""

_INSERTS: dict[str, str] = {
    "sales": "INSERT INTO st_sales VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "voids": "INSERT INTO st_voids VALUES (?, ?, ?, ?, ?, ?)",
    "refunds": "INSERT INTO st_refunds VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "refund_lines": "INSERT INTO st_refund_lines VALUES (?, ?, ?, ?, ?, ?)",
    "catalog": "INSERT INTO st_catalog_writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "shift_open": _SHIFT_OPEN,
    "shift_close": _SHIFT_CLOSE,
    "resolutions": "INSERT INTO st_resolutions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "effects": "INSERT INTO st_effects VALUES (?, ?, ?, ?, ?, ?)",
    "card_limits": "INSERT INTO st_card_limits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "card_outcomes": "INSERT INTO st_card_outcomes VALUES (?, ?, ?, ?, ?, ?, ?)",
}


class _StepsOf(dict[str, list[oversold.Step]]):
    """One store's sale steps per sku, filed under (store, sku) in the batch's map."""

    def __init__(self, store: str, into: oversold.SaleSteps) -> None:
        super().__init__()
        self.store, self.into = store, into

    def __missing__(self, sku: str) -> list[oversold.Step]:
        steps = self[sku] = self.into.setdefault((self.store, sku), [])  # origins share it
        return steps


_StoreTally = tuple[dict[str, list[int]], dict[tuple[str, int], int], _StepsOf]


class _Batch:
    """Rows gathered from one batch, per table, before one executemany each."""

    def __init__(self) -> None:
        self.rows: dict[str, list[Row]] = {name: [] for name in _INSERTS}
        self.moves: list[stock.MoveRow] = []  # non-sale moves; sale lines live in st_sales
        self.agg: stock.Aggregated = {}  # store -> sku -> [total delta, min hlc]
        self.buckets: stock.Buckets = {}  # store -> (sku, bucket) -> delta
        # origin -> its store's (agg, buckets, sale steps per sku): the lookup `_sale` inlines
        self.of_origin: dict[str, _StoreTally] = {}
        self.sale_steps: oversold.SaleSteps = {}  # (store, sku) -> its new sale lines
        self.totals: dict[str, list[int]] = {}  # shift -> [sales, gross]
        self.sale_ids: list[str] = []
        self.counts: list[tuple[Event, StockCounted]] = []
        self.voids: list[tuple[Event, SaleVoided]] = []
        self.refunds: list[tuple[Event, RefundIssued]] = []
        self.catalog_skus: set[str] = set()
        self.superseded: list[tuple[str, str, str]] = []  # (write eid, by eid, by origin)
        self.resolved: set[str] = set()  # conflict ids resolved in this batch

    def stock_of(self, origin: str) -> _StoreTally:
        """The (sku totals, sku buckets, sku sale steps) of the store `origin` moves."""
        found = self.of_origin.get(origin)
        if found is None:
            store = stock.stock_store(origin)
            found = (self.agg.setdefault(store, {}), self.buckets.setdefault(store, {}),
                     _StepsOf(store, self.sale_steps))  # fmt: skip
            self.of_origin[origin] = found
        return found

    def move(self, ev: Event, sku: str, delta: int) -> None:
        store = stock.stock_store(ev.origin)
        self.moves.append((store, sku, ev.hlc, ev.id, 0, delta))
        agg, buckets, _ = self.stock_of(ev.origin)
        hlc = ev.hlc
        acc = agg.get(sku)
        if acc is None:
            agg[sku] = [delta, hlc]
        else:
            acc[0] += delta
            if hlc < acc[1]:
                acc[1] = hlc
        key = (sku, stock.bucket_of(hlc))
        buckets[key] = buckets.get(key, 0) + delta


class StoreState:
    """The store's derived state; see the module docstring for the laws it keeps."""

    # 2: stock per (store, sku); 3: st_totals; 4: hq_wins among concurrent only;
    # 5: no st_skewed (a receiver's clock is not state); 6: st_superseded (catalog
    # writes a `supersede` resolution takes out); 7: one effective resolution per
    # conflict, its effects applied by the fold (st_effects, st_applied; `effects.py`);
    # 8: prices per store (a till's price is its store's override: st_store_prices);
    # 9: tax (st_sales.tax_mode, st_refund_lines.tax); 10: digests kept by triggers;
    # 11: card payments' approval and override, floor limits, outcomes of deferred
    # payments (st_card_*); 12: oversell runs kept by the fold (`oversold.py`: derived
    # tables, not snapshotted; a snapshot of 11 is read and its runs derived on load)
    version = 12
    # A version-4 snapshot holds every table of version 5 (and st_skewed, left unread);
    # one of 4 to 6 lacks only tables that are empty then: no build before 6 folded a
    # supersede (schema 4), none before 7 a resolution's effects (schema 5); such events
    # were stored unapplied by those builds and are folded at this build's rebuild.
    # Before 8 a till's price was the chain's: the snapshot's catalog writes are kept,
    # and `_sync_policy` recomputes the catalog from them (CATALOG_RULES differ).
    # Before 9 no sale had a tax mode nor a refund line tax (schema 6; stored unapplied
    # by those builds): their snapshots lack those columns, which take their defaults.
    # Before 11 no card event was folded (the st_card_* tables start empty), and a
    # sale's payments row is the same (approval/override_by appear only when set).
    # Loading any of these snapshots into the tables fires their digest triggers.
    reads_snapshots_of = (4, 5, 6, 7, 8, 9, 10, 11)
    tables = tuple(schema.TABLES)

    def __init__(
        self, price_policy: PricePolicy = "latest", concurrency_window_ms: int = DEFAULT_WINDOW_MS
    ) -> None:
        self.price_policy: PricePolicy = price_policy
        self.window_ms = concurrency_window_ms

    def create_tables(self, conn: sqlite3.Connection) -> None:
        schema.create(conn)
        oversold.create(conn)
        self._sync_policy(conn)
        oversold.ensure(conn)  # after a snapshot was loaded: derived from its stock

    def drop_tables(self, conn: sqlite3.Connection) -> None:
        schema.drop(conn)
        oversold.drop(conn)

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Accepted]) -> None:
        fresh = _fresh(conn, batch)
        if not fresh:
            return
        b = _Batch()
        for acc in fresh:
            _collect(b, acc)
        for name, sql in _INSERTS.items():
            if b.rows[name]:
                conn.executemany(sql, b.rows[name])
        digest.add_rows(conn, "st_sales", b.rows["sales"])  # schema.COUNTED_BY_FOLD
        _bump_totals(conn, b.totals)
        conn.executemany("INSERT INTO st_moves VALUES (?, ?, ?, ?, ?, ?)", b.moves)
        stock.bump_buckets(conn, b.buckets)
        stock.bump_aggregated(conn, b.agg)
        links.link(conn, b.sale_ids, b.voids, b.refunds)
        stock.apply_counts(conn, b.counts)
        if b.resolved:
            b.catalog_skus |= effects.settle(conn, b.resolved)
        if b.superseded:
            b.catalog_skus |= catalog.supersede(conn, b.superseded)
        catalog.refresh(conn, b.catalog_skus, self.price_policy, self.window_ms)
        oversold.maintain(conn, b.sale_steps)

    def settle(self, conn: sqlite3.Connection) -> bool:
        """A slice of the oversell runs `apply` held back, replayed (`oversell_settle`)."""
        return oversell_settle.settle_slice(conn)

    def _sync_policy(self, conn: sqlite3.Connection) -> None:
        """The effective catalog depends on the policy and the rules that read the writes
        (a snapshot of an older fold): recompute it when either changes."""
        want = {"price_policy": f"{self.price_policy}/{self.window_ms}",
                "catalog_rules": CATALOG_RULES}  # fmt: skip
        have = dict(conn.execute("SELECT key, value FROM st_config"))
        if all(have.get(k) == v for k, v in want.items()):
            return
        conn.executemany("INSERT OR REPLACE INTO st_config VALUES (?, ?)", list(want.items()))
        catalog.refresh_all(conn, self.price_policy, self.window_ms)


_BUMP_TOTALS = """
INSERT INTO st_totals VALUES (?, ?, ?) ON CONFLICT (shift)
DO UPDATE SET sales = sales + excluded.sales, gross = gross + excluded.gross
"""


def _bump_totals(conn: sqlite3.Connection, totals: dict[str, list[int]]) -> None:
    """Add the batch's sales to their shift's count and gross (one row per shift)."""
    conn.executemany(_BUMP_TOTALS, [(shift, n, g) for shift, (n, g) in totals.items()])


def _fresh(conn: sqlite3.Connection, batch: Sequence[Accepted]) -> list[Accepted]:
    """Events of `batch` not folded before (nor earlier in the batch); marks them seen."""
    by_origin: dict[str, dict[int, Accepted]] = {}
    for acc in batch:  # runs per event: no setdefault({}), which builds a dict each time
        if acc.flags & FLAG_UNAPPLIED:  # stored and forwarded by the log, never folded
            continue
        ev = acc.event
        seqs = by_origin.get(ev.origin)
        if seqs is None:
            seqs = by_origin[ev.origin] = {}
        if ev.seq not in seqs:  # the first copy in the batch wins
            seqs[ev.seq] = acc
    fresh: list[Accepted] = []
    for origin, seqs in by_origin.items():
        fresh += _fresh_of_origin(conn, origin, seqs)
    return fresh


def _fresh_of_origin(
    conn: sqlite3.Connection, origin: str, seqs: dict[int, Accepted]
) -> list[Accepted]:
    """One read and one rewrite of the origin's seen-runs per batch, not one per event."""
    runs = conn.execute("SELECT lo, hi FROM st_seen WHERE origin = ? ORDER BY lo", (origin,))
    old = [(lo, hi) for lo, hi in runs]
    new = sorted(seqs)
    if old and new[0] <= old[-1][1]:  # else all are past every run: the usual case
        new = [seq for seq in new if not _covered(old, seq)]
    if new:
        conn.execute("DELETE FROM st_seen WHERE origin = ?", (origin,))
        merged = _merge_runs(old + _runs(new))
        conn.executemany("INSERT INTO st_seen VALUES (?, ?, ?)", [(origin, *r) for r in merged])
    return [seqs[s] for s in new]


def _runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted distinct seqs -> inclusive runs (a batch is mostly one run per origin)."""
    out: list[tuple[int, int]] = []
    lo = prev = seqs[0]
    for seq in seqs[1:]:
        if seq != prev + 1:
            out.append((lo, prev))
            lo = seq
        prev = seq
    out.append((lo, prev))
    return out


def _covered(runs: list[tuple[int, int]], seq: int) -> bool:
    i = bisect.bisect_right(runs, (seq, _MAX_SEQ)) - 1
    return i >= 0 and runs[i][0] <= seq <= runs[i][1]


def _merge_runs(runs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(runs):
        if out and lo <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def _collect(b: _Batch, acc: Accepted) -> None:
    ev, body = acc.event, acc.body
    match body:
        case SaleCompleted():
            _sale(b, ev, body)
        case StockReceived():
            b.move(ev, body.sku, body.qty)
        case StockAdjusted():
            b.move(ev, body.sku, body.delta)
        case _:
            _collect_rare(b, ev, body)


def _sale(b: _Batch, ev: Event, body: SaleCompleted) -> None:
    # The hot path of ingest: the tally of `_Batch.move` is inlined, one bucket per sale.
    hlc, sid, origin = ev.hlc, ev.id, ev.origin
    agg, buckets, steps = b.of_origin.get(origin) or b.stock_of(origin)  # few origins
    bucket, total = stock.bucket_of(hlc), 0
    exclusive = body.tax_mode == "exclusive"
    for i, ln in enumerate(body.lines):
        sku, qty = ln.sku, ln.qty
        steps[sku].append((hlc, 0, sid, i, -qty, sid))  # oversell replay order
        total += qty * ln.unit_price - ln.discount
        if exclusive:  # schema 4: tax on top of the price
            total += ln.tax
        acc = agg.get(sku)
        if acc is None:
            agg[sku] = [-qty, hlc]
        else:
            acc[0] -= qty
            if hlc < acc[1]:
                acc[1] = hlc
        key = (sku, bucket)
        buckets[key] = buckets.get(key, 0) - qty
    shift_totals = b.totals.get(body.shift)
    if shift_totals is None:
        b.totals[body.shift] = [1, total]
    else:
        shift_totals[0] += 1
        shift_totals[1] += total
    pays = [_payment_row(p) for p in body.payments]
    b.sale_ids.append(sid)
    b.rows["sales"].append(
        (sid, origin, ev.seq, hlc, body.receipt, total, body.change, body.shift,
         body.cashier, len(body.lines), _json(body.lines).decode(), _json(pays).decode(),
         body.tax_mode)
    )  # fmt: skip


def _payment_row(p: Payment) -> tuple[object, ...]:
    """A payment in st_sales.payments: [method, amount, last4, auth, reference], plus
    [approval, override_by] only when either is set, so a sale of fold 5 (and a snapshot
    of it) has the very row fold 6 makes of it."""
    row = (p.method, p.amount, p.card_last4, p.auth, p.reference)
    return (*row, p.approval, p.override_by) if p.approval or p.override_by else row


def _collect_rare(b: _Batch, ev: Event, body: Body) -> None:
    match body:
        case StockCounted():
            b.counts.append((ev, body))
        case SaleVoided():
            b.voids.append((ev, body))
            b.rows["voids"].append((ev.id, body.sale, ev.hlc, ev.origin, ev.seq, body.reason))
        case RefundIssued():
            _refund(b, ev, body)
        case ProductUpserted() | PriceSet():
            _catalog(b, ev, body)
        case _:
            _collect_admin(b, ev, body)


def _refund(b: _Batch, ev: Event, body: RefundIssued) -> None:
    b.refunds.append((ev, body))
    b.rows["refunds"].append(
        (ev.id, body.sale, ev.hlc, ev.origin, ev.seq, body.amount, body.method,
         int(body.restock), body.reason)
    )  # fmt: skip
    for i, ln in enumerate(body.lines):
        b.rows["refund_lines"].append((ev.id, i, ln.line, ln.qty, ln.amount, ln.tax))


def _catalog(b: _Batch, ev: Event, body: ProductUpserted | PriceSet) -> None:
    b.catalog_skus.add(body.sku)
    head = (ev.id, body.sku, ev.hlc, ev.origin, ev.seq)
    if isinstance(body, ProductUpserted):
        tail: Row = ("product", body.name, body.price, body.tax_rate_bp, int(body.active))
    else:
        tail = ("price", None, body.price, None, None)
    b.rows["catalog"].append(head + tail)


def _collect_admin(b: _Batch, ev: Event, body: Body) -> None:
    match body:
        case ShiftOpened():
            row: Row = (body.shift, ev.id, ev.hlc, ev.origin, ev.seq, body.float_amount)
            b.rows["shift_open"].append((*row, body.cashier))
        case ShiftClosed():
            row = (body.shift, ev.id, ev.hlc, ev.origin, ev.seq, body.counted_cash)
            b.rows["shift_close"].append(row)
        case ConflictResolved():
            b.rows["resolutions"].append(
                (ev.id, body.conflict, body.action, body.by, body.reason, body.price,
                 ev.hlc, ev.origin)
            )  # fmt: skip
            b.superseded += [(eid, ev.id, ev.origin) for eid in body.supersedes]
            b.rows["effects"] += effects.effect_rows(ev, body)
            b.resolved.add(body.conflict)
        case _:
            _collect_cards(b, ev, body)


def _collect_cards(b: _Batch, ev: Event, body: Body) -> None:
    match body:
        case CardLimitsSet():
            b.rows["card_limits"].append(cards.limits_row(ev, body))
        case CardCaptured() | CardDeclined() | CardExpired():
            b.rows["card_outcomes"].append(cards.outcome_row(ev, body))
        case _:
            pass  # a body type this fold does not use: nothing to derive from it
