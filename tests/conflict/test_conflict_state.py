"""Unit tests of the fold on hand-made histories: arrival order edge cases."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from conflict import queries
from conflict.state import StoreState
from core.events import (
    Body,
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    SaleVoided,
    ShiftClosed,
    ShiftOpened,
    StockAdjusted,
    StockCounted,
    StockReceived,
)
from core.fold import FLAG_SKEWED, FLAG_UNAPPLIED, Accepted

from .factory import Chain, apply_all, fresh_db, sale_body

T1, T2, HQ = "s1/t1", "s1/t2", "hq"
S2 = "s2/t1"  # a till of another store: its stock is apart


class World:
    """A fold, a DB and a chain; `ev` makes an event at wall `ms`, `apply` folds batches."""

    def __init__(self, policy: str = "latest", window_ms: int = 5000) -> None:
        self.fold = StoreState(price_policy=policy, concurrency_window_ms=window_ms)  # type: ignore[arg-type]
        self.conn = fresh_db(self.fold)
        self.chain = Chain()

    def ev(self, origin: str, ms: int, body: Body, flags: int = 0) -> Accepted:
        return self.chain.make(origin, body, ms, flags)

    def apply(self, *batches: list[Accepted]) -> None:
        for batch in batches:
            apply_all(self.fold, self.conn, batch)

    def on_hand(self, sku: str = "A", store: str = "s1") -> int:
        return queries.stock_levels(self.conn, [sku], store=store)[sku]


@pytest.fixture
def w() -> Iterator[World]:
    world = World()
    yield world
    world.conn.close()


def test_void_before_sale_restocks_once_sale_arrives(w: World) -> None:
    recv = w.ev(T1, 1, StockReceived(sku="A", qty=10))
    sale = w.ev(T1, 10, sale_body([("A", 3, 100)]))
    void = w.ev(T2, 20, SaleVoided(sale=sale.event.id))
    w.apply([recv], [void])
    assert w.on_hand() == 10
    assert queries.sale(w.conn, sale.event.id) is None
    w.apply([sale])
    assert w.on_hand() == 10
    got = queries.sale(w.conn, sale.event.id)
    assert got is not None and got["voided"] is True
    assert queries.sales_summary(w.conn) == (1, 300, 300, 0, 0)


def test_two_voids_on_two_tills_restock_once_at_the_earliest(w: World) -> None:
    recv = w.ev(T1, 1, StockReceived(sku="A", qty=10))
    sale = w.ev(T1, 10, sale_body([("A", 3, 100)]))
    early = w.ev(T1, 20, SaleVoided(sale=sale.event.id))
    count = w.ev(T2, 25, StockCounted(sku="A", count=10))  # saw the shelf after the early void
    late = w.ev(T2, 30, SaleVoided(sale=sale.event.id))
    w.apply([recv, sale], [late])
    assert w.on_hand() == 10  # restocked by the late void for now
    w.apply([count])
    assert w.on_hand() == 13  # count 10 + the late void's restock after it
    w.apply([early])
    assert w.on_hand() == 10  # restock moved to the early void, before the count
    assert w.conn.execute("SELECT void_eid FROM st_void_applied").fetchall() == [(early.event.id,)]
    assert w.conn.execute("SELECT COUNT(*) FROM st_moves WHERE delta > 0 AND eid != ?",
                          (recv.event.id,)).fetchone() == (1,)  # fmt: skip


def test_count_then_late_earlier_sale_does_not_change_on_hand(w: World) -> None:
    count = w.ev(T2, 50, StockCounted(sku="A", count=7))
    early_sale = w.ev(T1, 40, sale_body([("A", 2, 100)]))
    later_recv = w.ev(T2, 60, StockReceived(sku="A", qty=5))
    w.apply([count])
    w.apply([early_sale, later_recv])  # one batch straddling the count: the recompute branch
    assert w.on_hand() == 12
    assert w.conn.execute("SELECT COUNT(*) FROM st_all_moves").fetchone() == (2,)  # kept


def test_move_at_exactly_the_count_hlc_is_already_counted(w: World) -> None:
    count = w.ev(T2, 50, StockCounted(sku="A", count=7))
    same = w.ev(T1, 50, StockReceived(sku="A", qty=5))
    assert same.event.hlc == count.event.hlc
    w.apply([count], [same])
    assert w.on_hand() == 7


def test_concurrent_counts_latest_by_hlc_then_origin_wins(w: World) -> None:
    a = w.ev(T1, 50, StockCounted(sku="A", count=3))
    b = w.ev(T2, 50, StockCounted(sku="A", count=9))  # same hlc, "s1/t2" > "s1/t1"
    w.apply([b], [a])
    assert w.on_hand() == 9


def test_refund_beyond_sold_is_kept_and_restocks_as_asked(w: World) -> None:
    sale = w.ev(T1, 10, sale_body([("A", 2, 100)]))
    too_much = RefundIssued(sale=sale.event.id, lines=[RefundLine(line=0, qty=5, amount=900)])
    no_line = RefundIssued(sale=sale.event.id, lines=[RefundLine(line=3, qty=1, amount=10)])
    r1, r2 = w.ev(T2, 20, too_much), w.ev(T2, 21, no_line)
    w.apply([r1, r2], [sale])  # refunds before their sale
    assert w.on_hand() == -2 + 5  # the out-of-range line moves nothing
    got = queries.sale(w.conn, sale.event.id)
    assert got is not None and got["refunded"] == 910
    assert queries.sales_summary(w.conn) == (1, 200, 0, 910, -710)


def test_refund_without_restock_moves_nothing(w: World) -> None:
    sale = w.ev(T1, 10, sale_body([("A", 2, 100)]))
    body = RefundIssued(sale=sale.event.id, lines=[RefundLine(line=0, qty=1, amount=100)],
                        restock=False)  # fmt: skip
    w.apply([sale, w.ev(T1, 11, body)])
    assert w.on_hand() == -2


def _prices(policy: str, window_ms: int = 5000) -> int:
    w = World(policy, window_ms)
    product = ProductUpserted(sku="A", name="tea", price=300)
    w.apply([
        w.ev(HQ, 1000, product),
        w.ev(T1, 2000, PriceSet(sku="A", price=250)),
        w.ev(HQ, 2500, PriceSet(sku="A", price=280)),
        w.ev(T2, 4000, PriceSet(sku="A", price=270)),
    ])  # fmt: skip
    got = queries.product(w.conn, "A", "s1")  # the price store s1 sells at
    w.conn.close()
    assert got is not None and got["name"] == "tea"
    return int(got["price"])


def test_price_policies() -> None:
    assert _prices("latest") == 270
    assert _prices("hq_wins") == 280
    assert _prices("lowest") == 250  # t1 at 2000 is within 5 s of t2's 4000
    assert _prices("lowest", window_ms=1000) == 270  # only t2's write is concurrent


def test_hq_wins_only_among_concurrent_writes() -> None:
    """A store's price change made after HQ's write had settled takes effect; one made
    within the window of HQ's yields to it."""
    assert _later_store_price(later_by_ms=60_000) == 250
    assert _later_store_price(later_by_ms=2_000) == 300


def _later_store_price(later_by_ms: int) -> int:
    w = World("hq_wins", 5000)
    w.apply([
        w.ev(HQ, 1000, ProductUpserted(sku="A", name="tea", price=300)),
        w.ev(T1, 1000 + later_by_ms, PriceSet(sku="A", price=250)),
    ])  # fmt: skip
    got = queries.product(w.conn, "A", "s1")
    w.conn.close()
    assert got is not None
    return int(got["price"])


def test_price_set_alone_makes_no_product_until_upserted(w: World) -> None:
    price = w.ev(T1, 5, PriceSet(sku="A", price=99))
    w.apply([price])
    assert queries.product(w.conn, "A") is None
    w.apply([w.ev(HQ, 1, ProductUpserted(sku="A", name="tea", price=300, active=False))])
    assert queries.product(w.conn, "A", "s1") == {
        "sku": "A", "name": "tea", "price": 99, "tax_rate_bp": 0, "active": False,
        "chain_price": 300, "overrides": {"s1": 99},
    }  # fmt: skip
    assert queries.catalog(w.conn, "s1")[0]["price"] == 99
    assert queries.catalog(w.conn)[0]["price"] == 300  # the chain's view (HQ)
    assert queries.catalog(w.conn, "s2")[0]["price"] == 300  # another store's


def test_policy_change_on_open_recomputes_products(w: World) -> None:
    w.apply([w.ev(HQ, 1, ProductUpserted(sku="A", name="tea", price=300)),
             w.ev(T1, 2, PriceSet(sku="A", price=200))])  # fmt: skip
    StoreState(price_policy="hq_wins").create_tables(w.conn)
    got = queries.product(w.conn, "A", "s1")
    assert got is not None and got["price"] == 300


def test_rebuild_gives_the_same_digest(w: World) -> None:
    events = [w.ev(HQ, 1, StockReceived(sku="A", qty=4)), w.ev(T1, 2, sale_body([("A", 1, 5)]))]
    w.apply(events)
    before = queries.state_digest(w.conn)
    with w.conn:
        w.fold.drop_tables(w.conn)
        w.fold.create_tables(w.conn)
        w.fold.apply(w.conn, events)
    assert queries.state_digest(w.conn) == before


def test_unapplied_skipped_and_the_skew_flag_is_not_state(w: World) -> None:
    skewed = w.ev(T1, 1, StockReceived(sku="A", qty=4), FLAG_SKEWED)
    unapplied = w.ev(T1, 2, StockReceived(sku="A", qty=100), FLAG_UNAPPLIED)
    w.apply([skewed, unapplied])
    assert w.on_hand() == 4
    # The receiver's clock decided the flag: a replica that did not flag it (the
    # author) must hold the same state.
    other = World()
    try:
        other.apply([other.ev(T1, 1, StockReceived(sku="A", qty=4))])
        assert queries.state_digest(w.conn) == queries.state_digest(other.conn)
    finally:
        other.conn.close()


def test_shift_totals_and_snapshot(w: World) -> None:
    w.apply([
        w.ev(T1, 1, ShiftOpened(shift="sh1", float_amount=1000, cashier="ann")),
        w.ev(T1, 2, sale_body([("A", 2, 150)], receipt="R7", shift="sh1")),
        w.ev(T1, 3, sale_body([("B", 1, 50)], receipt="R8", shift="sh1")),
        w.ev(T1, 9, ShiftClosed(shift="sh1", counted_cash=1290)),
    ])  # fmt: skip
    sale_id = queries.sale_by_receipt(w.conn, "R8")[0]["id"]
    w.apply([w.ev(T1, 4, SaleVoided(sale=sale_id))])
    t = queries.shift_totals(w.conn, "sh1")
    assert (t["sales"], t["gross"], t["voided"], t["net"]) == (2, 350, 50, 300)
    assert (t["expected_cash"], t["counted_cash"], t["over_short"]) == (1300, 1290, -10)
    snap = queries.state_snapshot(w.conn)
    assert json.loads(json.dumps(snap)) == snap
    assert snap["stock"] == {"A": -2, "B": 0}
    assert snap["stock_by_store"] == {"s1": {"A": -2, "B": 0}}


def test_stock_is_kept_per_store(w: World) -> None:
    w.apply([
        w.ev(HQ, 1, StockReceived(sku="A", qty=5)),  # HQ's own stock: store "hq"
        w.ev(T1, 2, sale_body([("A", 2, 100)])),
        w.ev(S2, 3, StockReceived(sku="A", qty=3)),
        w.ev(S2, 4, sale_body([("A", 1, 100), ("B", 1, 100)])),
    ])  # fmt: skip
    assert (w.on_hand(store="s1"), w.on_hand(store="s2"), w.on_hand(store="hq")) == (-2, 2, 5)
    assert queries.stock_levels(w.conn, store="s2") == {"A": 2, "B": -1}
    assert queries.stock_levels(w.conn, ["A", "C"], store="s9") == {"A": 0, "C": 0}
    assert queries.stock_levels(w.conn) == {"A": 5, "B": -1}  # summed over the stores
    assert queries.stock_by_store(w.conn) == {
        "hq": {"A": 5}, "s1": {"A": -2}, "s2": {"A": 2, "B": -1},
    }  # fmt: skip
    assert queries.stock_by_store(w.conn, ["B"]) == {"hq": {"B": 0}, "s1": {"B": 0},
                                                     "s2": {"B": -1}}  # fmt: skip


def test_count_resets_only_its_own_store(w: World) -> None:
    w.apply([
        w.ev(T1, 1, StockReceived(sku="A", qty=10)),
        w.ev(S2, 2, StockReceived(sku="A", qty=10)),
        w.ev(S2, 3, StockCounted(sku="A", count=4)),
        w.ev(T1, 4, sale_body([("A", 1, 100)])),
    ])  # fmt: skip
    assert (w.on_hand(store="s1"), w.on_hand(store="s2")) == (9, 4)
    w.apply([w.ev("s2/t2", 1, sale_body([("A", 1, 100)]))])  # late, before s2's count
    w.apply([w.ev(T2, 1, sale_body([("A", 1, 100)]))])  # late in s1: no count there
    assert (w.on_hand(store="s1"), w.on_hand(store="s2")) == (8, 4)


def test_void_restocks_the_sales_store_refund_its_own(w: World) -> None:
    sale = w.ev(T1, 10, sale_body([("A", 2, 100)]))
    refund = RefundIssued(sale=sale.event.id, lines=[RefundLine(line=0, qty=1, amount=100)])
    w.apply([sale, w.ev(S2, 30, refund)])  # goods brought back to store 2
    assert queries.stock_by_store(w.conn) == {"s1": {"A": -2}, "s2": {"A": 1}}
    w.apply([w.ev(HQ, 40, SaleVoided(sale=sale.event.id))])  # a back-office void at HQ
    assert queries.stock_by_store(w.conn) == {"s1": {"A": 0}, "s2": {"A": 1}}


def test_earlier_void_from_another_store_leaves_no_trace_of_the_later(w: World) -> None:
    sale = w.ev(T1, 10, sale_body([("A", 2, 100)]))
    later, earlier = w.ev(S2, 30, SaleVoided(sale=sale.event.id)), w.ev(HQ, 20, SaleVoided(
        sale=sale.event.id))  # fmt: skip
    w.apply([sale, later], [earlier])
    digest = queries.state_digest(w.conn)
    other = World()
    other.apply([sale, earlier, later])
    assert queries.state_digest(other.conn) == digest
    assert queries.stock_by_store(w.conn) == {"s1": {"A": 0}}
    other.conn.close()


def test_who_made_an_event_is_not_state() -> None:
    """`by` (schema 3) is for the audit: a store day whose events name who made them
    folds to the tables, and the digest, of the same day written without."""

    def day(by: str) -> str:
        world = World()
        try:
            sale = world.ev(T1, 10, sale_body([("A", 3, 100)], shift="S1"))
            world.apply([
                world.ev(HQ, 1, ProductUpserted(sku="A", name="tea", price=100, by=by)),
                world.ev(T1, 2, StockReceived(sku="A", qty=10, by=by)),
                world.ev(T1, 3, ShiftOpened(shift="S1", float_amount=500)),
                sale,
                world.ev(T1, 20, RefundIssued(sale=sale.event.id, lines=[RefundLine(0, 1, 100)],
                                              by=by)),
                world.ev(T2, 30, SaleVoided(sale=sale.event.id, by=by)),
                world.ev(T2, 40, StockCounted(sku="A", count=9, by=by)),
                world.ev(T2, 45, StockAdjusted(sku="A", delta=-1, reason="broken", by=by)),
                world.ev(T2, 50, PriceSet(sku="A", price=120, by=by)),
                world.ev(T1, 60, ShiftClosed(shift="S1", counted_cash=800, by=by)),
            ])  # fmt: skip
            return queries.state_digest(world.conn)
        finally:
            world.conn.close()

    assert day("C042 (token 3f9a2c1b)") == day("")
