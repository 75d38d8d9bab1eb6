"""Test helpers: valid chained events for several origins, hypothesis strategies for
whole scenarios, and a stand-in for the log that applies events to a fresh DB in batches.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from hypothesis import strategies as st

from conflict import queries
from conflict.detect import detect
from conflict.oversold import kept
from conflict.policies import Policies
from conflict.state import StoreState
from core.clock import pack
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
    RefundLine,
    ResolvedMove,
    SaleCompleted,
    SaleLine,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
    decode_body,
    encode_body,
    event_hash,
)
from core.fold import FLAG_SKEWED, Accepted

__all__ = [
    "ORIGINS",
    "SKUS",
    "UNKNOWN_SALE",
    "Chain",
    "apply_all",
    "fresh_db",
    "sale_body",
    "scenarios",
    "split",
    "stock_by_key",
    "taxed_sale",
]

ORIGINS = ("s1/t1", "s1/t2", "s2/t1", "hq")  # three stores' stock: s1, s2 and HQ's own
SKUS = ("A", "B", "C")
UNKNOWN_SALE = "s9/t9:1"


@dataclass
class Chain:
    """Makes events that the real log would accept: seq 1.., prev = hash of the previous
    event of the origin, HLC strictly increasing per origin."""

    heads: dict[str, tuple[int, bytes, int]] = field(default_factory=dict)

    def make(self, origin: str, body: Body, ms: int, flags: int = 0) -> Accepted:
        seq, prev, last = self.heads.get(origin, (0, b"", -1))
        hlc = max(pack(ms, 0), last + 1)
        typ, data = encode_body(body)
        ev = Event(origin, seq + 1, hlc, body.min_schema(), typ, data, prev)
        self.heads[origin] = (seq + 1, event_hash(ev), hlc)
        return Accepted(ev, decode_body(ev), flags)


def sale_body(
    lines: Sequence[tuple[str, int, int]], receipt: str = "R1", shift: str = "", card: str = ""
) -> SaleCompleted:
    """A sale paid exactly, in cash, or by card if `card` is "online" or "deferred";
    lines are (sku, qty, unit_price)."""
    sl = [SaleLine(sku=s, qty=q, unit_price=p) for s, q, p in lines]
    total = sum(q * p for _, q, p in lines)
    pay = Payment(method="cash", amount=total)
    if card:
        pay = Payment(method="card", amount=total, card_token="tok_test_0001",
                      card_last4="4242", auth=card)  # type: ignore[arg-type]  # fmt: skip
    return SaleCompleted(receipt=receipt, lines=sl, payments=[pay], shift=shift)


def taxed_sale(
    sale: SaleCompleted, rates: Sequence[int], mode: Literal["inclusive", "exclusive"]
) -> SaleCompleted:
    """`sale` as a till of schema 6 makes it: each line's tax at `rates[i]` basis points,
    in (inclusive) or on (exclusive) its value, rounded half up per line; paid exactly
    (its one payment, in cash or by card, for the taxed total)."""
    lines = []
    for line, rate in zip(sale.lines, rates, strict=True):
        value, whole = line.total, 10_000 + rate if mode == "inclusive" else 10_000
        tax = (2 * value * rate + whole) // (2 * whole)
        lines.append(msgspec.structs.replace(line, tax=tax, tax_rate_bp=rate))
    taxed = msgspec.structs.replace(sale, lines=lines, tax_mode=mode)
    payments = [msgspec.structs.replace(p, amount=taxed.total) for p in sale.payments]
    return msgspec.structs.replace(taxed, payments=payments)


def fresh_db(fold: StoreState) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    with conn:
        fold.create_tables(conn)
    return conn


def stock_by_key(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """{(store, sku): on_hand} of the fold, comparable with `model.model_stock`."""
    levels = queries.stock_by_store(conn)
    return {(store, sku): n for store, per in levels.items() for sku, n in per.items()}


def split(items: Sequence[Accepted], cuts: Sequence[int]) -> list[list[Accepted]]:
    """Cut `items` into batches at the given positions (any ints; clamped, sorted)."""
    bounds = sorted({0, len(items), *(min(max(c, 0), len(items)) for c in cuts)})
    return [list(items[a:b]) for a, b in itertools.pairwise(bounds)]


def apply_all(
    fold: StoreState,
    conn: sqlite3.Connection,
    events: Sequence[Accepted],
    cuts: Sequence[int] = (),
) -> sqlite3.Connection:
    """Stand-in for the log: one transaction per batch, as the log's writer does."""
    for batch in split(events, cuts):
        with conn:
            fold.apply(conn, batch)
    return conn


# --- hypothesis strategies ---------------------------------------------------------------

_skus = st.sampled_from(SKUS)
_lines = st.lists(st.tuples(_skus, st.integers(1, 5), st.integers(1, 500)), min_size=1, max_size=3)


_TAX_MODES = (None, "inclusive", "exclusive")  # None: a sale before tills computed tax
_RATES = (0, 550, 2000)


@st.composite
def _body(draw: st.DrawFn, sale_ids: list[str], tax: bool = False, effects: bool = False) -> Body:
    kind = draw(st.sampled_from(_KINDS))
    targets = st.sampled_from([*sale_ids, UNKNOWN_SALE])
    if kind == "sale":
        receipt = f"R{draw(st.integers(0, 30))}"  # small pool: collisions happen
        card = draw(st.sampled_from(("", "", "online", "deferred", "deferred")))
        sale = sale_body(draw(_lines), receipt, draw(st.sampled_from(("sh1", "sh2"))), card)
        mode = draw(st.sampled_from(_TAX_MODES)) if tax else None
        if mode is None:
            return sale
        return taxed_sale(sale, [draw(st.sampled_from(_RATES)) for _ in sale.lines], mode)
    if kind == "card":  # an outcome of a (maybe) deferred payment, maybe twice or unknown
        pid = f"{draw(targets)}#0"
        return draw(st.sampled_from((
            CardCaptured(payment=pid, reference="C1"), CardDeclined(payment=pid, reason="no"),
            CardExpired(payment=pid),
        )))  # fmt: skip
    if kind == "receive":
        return StockReceived(sku=draw(_skus), qty=draw(st.integers(1, 20)))
    if kind == "adjust":
        delta = draw(st.integers(-5, 5).filter(bool))
        return StockAdjusted(sku=draw(_skus), delta=delta, reason="damage")
    if kind == "count":
        return StockCounted(sku=draw(_skus), count=draw(st.integers(0, 40)))
    if kind == "void":
        return SaleVoided(sale=draw(targets))
    if kind == "refund":
        return _refund(draw, draw(targets), tax)
    return _admin(draw, kind, effects)


def _refund(draw: st.DrawFn, sale: str, tax: bool = False) -> RefundIssued:
    lines = draw(
        st.lists(
            st.builds(RefundLine, line=st.integers(0, 3), qty=st.integers(1, 5),
                      amount=st.integers(0, 500)),
            min_size=1, max_size=2,
        )
    )  # fmt: skip
    if tax:  # the tax in each line's amount, given back (schema 6)
        lines = [msgspec.structs.replace(ln, tax=draw(st.integers(0, ln.amount))) for ln in lines]
    method = draw(st.sampled_from(("cash", "card")))
    return RefundIssued(sale=sale, lines=lines, method=method, restock=draw(st.booleans()))


def _admin(draw: st.DrawFn, kind: str, effects: bool = False) -> Body:
    if kind == "product":
        return ProductUpserted(
            sku=draw(_skus), name=draw(st.sampled_from(("tea", "Tea", "coffee"))),
            price=draw(st.integers(0, 999)), tax_rate_bp=draw(st.sampled_from((0, 2000))),
            active=draw(st.booleans()),
        )  # fmt: skip
    if kind == "price":
        return PriceSet(sku=draw(_skus), price=draw(st.integers(0, 999)))
    if kind == "open":
        return ShiftOpened(shift=draw(st.sampled_from(("sh1", "sh2"))), float_amount=1000)
    if kind == "close":
        shift = draw(st.sampled_from(("sh1", "sh2")))
        return ShiftClosed(shift=shift, counted_cash=draw(st.integers(0, 5000)))
    if kind == "limits":
        return CardLimitsSet(
            per_payment=draw(st.integers(0, 999)), till_total=5000, till_count=5,
            max_age_s=3600, store=draw(st.sampled_from(("", "s1"))),
        )  # fmt: skip
    if effects:
        return _resolution(draw)
    return ConflictResolved(conflict="c1", action="accept", by="mgr")


def _resolution(draw: st.DrawFn) -> ConflictResolved:
    """One of two conflicts' resolutions, with effects or none: the earliest of each
    conflict applies (a later-arriving earlier one takes the other's moves and counts
    out again, the stock row with them if nothing else moved that SKU)."""
    conflict = draw(st.sampled_from(("c1", "c2")))
    action = draw(st.sampled_from(("accept", "compensate", "recount")))
    if action == "compensate":
        moves = draw(st.lists(st.builds(ResolvedMove, sku=st.sampled_from((*SKUS, "Z")),
                                        delta=st.integers(-5, 5).filter(bool)),
                              min_size=1, max_size=2))  # fmt: skip
        return ConflictResolved(conflict=conflict, action=action, by="mgr", moves=moves)
    if action == "recount":
        return ConflictResolved(conflict=conflict, action=action, by="mgr",
                                sku=draw(st.sampled_from((*SKUS, "Z"))),
                                count=draw(st.integers(0, 40)))  # fmt: skip
    return ConflictResolved(conflict=conflict, action=action, by="mgr")


_KINDS = (
    *("sale",) * 6, "receive", "adjust", "count", "void", "void", "refund", "refund",
    "product", "product", "price", "price", "open", "close", "resolve",
    "card", "card", "card", "limits",
)  # fmt: skip


@st.composite
def scenarios(
    draw: st.DrawFn, max_events: int = 40, tax: bool = False, effects: bool = False
) -> list[Accepted]:
    """Valid chained events from ORIGINS, interleaved, HLCs close enough to collide.
    `effects`: resolutions of two conflicts carry moves or recounts too (the models some
    tests compare with read resolutions as having none).
    `tax`: sales of schema 6 too (taxed inclusive or exclusive, or not recorded) and
    refund lines giving back tax."""
    chain, events, sale_ids, ms = Chain(), [], [], 1_000_000
    for _ in range(draw(st.integers(0, max_events))):
        ms += draw(st.sampled_from((0, 0, 1, 500, 3000, 20_000)))
        origin = draw(st.sampled_from(ORIGINS))
        flags = FLAG_SKEWED if draw(st.integers(0, 15)) == 0 else 0
        acc = chain.make(origin, draw(_body(sale_ids, tax, effects)), ms, flags)
        if isinstance(acc.body, SaleCompleted):
            sale_ids.append(acc.event.id)
        events.append(acc)
    return events


def assert_oversell_kept(conn: sqlite3.Connection) -> None:
    """The oversells read from the kept runs are those the full replay finds (both
    policies: `flag_recount` reads how each run ended)."""
    assert kept(conn)
    for policy in ("allow_and_report", "flag_recount"):
        p = Policies(oversell=policy)  # type: ignore[arg-type]
        found = detect(conn, p, kinds=["oversell"])
        assert found == detect(conn, p, kinds=["oversell"], recompute=True)
