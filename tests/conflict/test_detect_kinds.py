"""One test per conflict kind, on real EventLogs (tmp SQLite files) merged at log level.

Three replicas (hq, s1/t1, s1/t2) exchange events with `read_range` + `ingest`; a
partition is not exchanging for a while, heal is exchanging everything. After heal a
conflict shows on every replica with the SAME id; a resolution appended on one replica
and merged shows it resolved everywhere. Stock is store s1's (moved by its tills); HQ
sees it but cannot append stock events for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conflict import queries
from conflict.detect import Conflict, detect
from conflict.errors import ConflictError, UnknownConflict, WrongStore
from conflict.policies import Policies
from conflict.resolve import Action, resolve
from core.events import (
    PriceSet,
    ProductUpserted,
    RefundIssued,
    RefundLine,
    SaleVoided,
    StockCounted,
    StockReceived,
    decode_event,
)

from .factory import sale_body
from .lognet import LogNet

HQ, T1, T2 = "hq", "s1/t1", "s1/t2"
NAMES = (HQ, T1, T2)
ONE = [RefundLine(line=0, qty=1, amount=100)]  # refund one unit of the first line


class Net(LogNet):
    """hq, s1/t1, s1/t2 with the given policies; `heal` is exchanging everything."""

    def __init__(self, policies: Policies) -> None:
        super().__init__(NAMES)
        self.policies = policies

    async def heal(self) -> None:
        await self.exchange()

    async def conflicts(self, name: str, kind: str | None = None) -> list[Conflict]:
        found = await self.logs[name].read(lambda c: detect(c, self.policies))
        return [c for c in found if kind is None or c.kind == kind]

    async def same_everywhere(self, kind: str, names: tuple[str, ...] = NAMES) -> list[Conflict]:
        views = [await self.conflicts(n, kind) for n in names]
        assert all(v == views[0] for v in views), views
        return views[0]

    async def resolve(self, name: str, cid: str, action: Action, **kw: int) -> None:
        await resolve(self.logs[name], self.policies, cid, action, "mgr ana", "checked", **kw)

    async def stock(self, name: str, sku: str = "A") -> int:
        """Store s1's stock of `sku` as replica `name` sees it."""
        return await self.logs[name].read(lambda c: queries.stock_levels(c, [sku], store="s1")[sku])


@pytest.fixture
async def net(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Net]:
    policies = getattr(request, "param", Policies())
    n = Net(policies)
    await n.open(
        tmp_path,
        price_policy=policies.price,
        concurrency_window_ms=policies.concurrency_window_ms,
    )
    yield n
    await n.close()


async def _resolved_everywhere(net: Net, kind: str, cid: str, action: str) -> Conflict:
    await net.heal()
    [c] = [c for c in await net.same_everywhere(kind) if c.id == cid]
    assert c.resolution is not None and c.resolution.action == action
    assert c.resolution.by == "mgr ana" and c.resolution.reason == "checked"
    for name in NAMES:
        assert all(x.id != cid for x in await net.conflicts(name) if x.is_open)
    return c


async def test_oversell_seen_everywhere_then_compensated(net: Net) -> None:
    await net.do(T1, StockReceived(sku="A", qty=1))
    await net.heal()
    s1 = await net.do(T1, sale_body([("A", 1, 100)], "R1"), 2_000_000)  # partition: both
    s2 = await net.do(T2, sale_body([("A", 1, 100)], "R2"), 2_000_500)  # sell the last one
    assert await net.conflicts(T1, "oversell") == []
    await net.heal()
    [c] = await net.same_everywhere("oversell")
    assert c.subject == "A" and c.store == "s1" and c.events == [s2] and c.is_open
    assert c.details["lowest"] == -1
    assert s1 not in c.events  # the sale that went to zero oversold nothing
    with pytest.raises(WrongStore, match="resolve it on a till of store 's1'"):
        await net.resolve(HQ, c.id, "compensate")  # HQ's adjustment would be HQ's stock
    with pytest.raises(WrongStore):
        await net.resolve(HQ, c.id, "recount", count=3)
    await net.resolve(T1, c.id, "compensate")
    done = await _resolved_everywhere(net, "oversell", c.id, "compensate")
    assert done.events == [s2]
    assert [await net.stock(n) for n in NAMES] == [0, 0, 0]


async def test_oversell_running_prefix_resolved_rest_new(net: Net) -> None:
    await net.do(T1, sale_body([("A", 1, 100)]), 2_000_000)
    await net.heal()
    [c] = await net.same_everywhere("oversell")
    await net.resolve(HQ, c.id, "accept")
    later = await net.do(T2, sale_body([("A", 2, 100)]), 3_000_000)  # still below zero
    await net.heal()
    old, new = sorted(await net.same_everywhere("oversell"), key=lambda x: x.is_open)
    assert old.id == c.id and old.resolution is not None and new.events == [later] and new.is_open


@pytest.mark.parametrize("net", [Policies(oversell="flag_recount")], indirect=True)
async def test_flag_recount_count_after_oversell_resolves_it(net: Net) -> None:
    await net.do(T1, sale_body([("A", 1, 100)]), 2_000_000)
    await net.heal()
    [c] = await net.same_everywhere("oversell")
    assert c.details["needs_recount"] == 1 and c.is_open
    count = await net.do(T2, StockCounted(sku="A", count=4), 3_000_000)
    await net.heal()
    [c] = await net.same_everywhere("oversell")
    assert c.resolution is not None and c.resolution.event == count
    assert c.resolution.action == "recount"


@pytest.mark.parametrize("net", [Policies(price="hq_wins")], indirect=True)
async def test_concurrent_price_choose_price(net: Net) -> None:
    await net.do(HQ, ProductUpserted(sku="A", name="tea", price=90), 1_000_000)
    await net.heal()
    hq = await net.do(HQ, PriceSet(sku="A", price=100), 2_000_000)
    t1 = await net.do(T1, PriceSet(sku="A", price=120), 2_002_000)  # 2 s apart: concurrent
    await net.heal()
    [c] = await net.same_everywhere("concurrent_price")
    assert c.events == [hq, t1] and c.details["effective_price"] == 100
    await net.resolve(HQ, c.id, "choose_price", price=110)
    await _resolved_everywhere(net, "concurrent_price", c.id, "choose_price")
    for name in NAMES:
        product = await net.logs[name].read(lambda conn: queries.product(conn, "A"))
        assert product is not None and product["price"] == 110


async def test_double_void(net: Net) -> None:
    sale = await net.do(T1, sale_body([("A", 1, 100)]))
    await net.heal()
    v1 = await net.do(T1, SaleVoided(sale=sale))
    v2 = await net.do(T2, SaleVoided(sale=sale))
    await net.heal()
    [c] = await net.same_everywhere("double_void")
    assert c.subject == sale and c.events == [v1, v2] and c.details["tills"] == 2
    with pytest.raises(ConflictError, match="accept"):
        await net.resolve(T2, c.id, "compensate")
    await net.resolve(T2, c.id, "accept")
    await _resolved_everywhere(net, "double_void", c.id, "accept")


async def test_double_refund_compensate_reverses_second_restock(net: Net) -> None:
    await net.do(T2, StockReceived(sku="A", qty=5))
    sale = await net.do(T1, sale_body([("A", 2, 100)]))
    await net.heal()
    line = [RefundLine(line=0, qty=1, amount=100)]
    r1 = await net.do(T1, RefundIssued(sale=sale, lines=line), 3_000_000)
    r2 = await net.do(T2, RefundIssued(sale=sale, lines=line), 3_000_100)
    await net.heal()
    [c] = await net.same_everywhere("double_refund")
    assert c.events == [r1, r2]
    assert await net.stock(HQ) == 5
    with pytest.raises(WrongStore):
        await net.resolve(HQ, c.id, "compensate")
    await net.resolve(T2, c.id, "compensate")
    await _resolved_everywhere(net, "double_refund", c.id, "compensate")
    assert [await net.stock(n) for n in NAMES] == [4, 4, 4]


async def test_over_refund_of_voided_sale(net: Net) -> None:
    sale = await net.do(T1, sale_body([("A", 1, 100)]))
    await net.heal()
    void = await net.do(T1, SaleVoided(sale=sale))
    refund = await net.do(T2, RefundIssued(sale=sale, lines=ONE))
    await net.heal()
    [c] = await net.same_everywhere("over_refund")
    assert c.events == [void, refund] and c.details["why"] == "voided"
    assert await net.stock(T1) == 1  # restocked twice: sold 1, void +1, refund +1
    await net.resolve(T1, c.id, "compensate")
    await _resolved_everywhere(net, "over_refund", c.id, "compensate")
    assert [await net.stock(n) for n in NAMES] == [0, 0, 0]


async def test_over_refund_amount_and_qty(net: Net) -> None:
    sale = await net.do(T1, sale_body([("A", 1, 100)]))
    await net.heal()
    await net.do(T2, RefundIssued(sale=sale, lines=[RefundLine(line=0, qty=3, amount=250)]))
    await net.heal()
    [c] = await net.same_everywhere("over_refund")
    assert c.details == {"why": "amount,lines", "sold": 100, "refunded": 250}


async def test_refund_of_unknown_sale_goes_away_when_sale_arrives(net: Net) -> None:
    sale = await net.do(T1, sale_body([("A", 1, 100)]))  # not yet replicated
    refund = await net.do(T2, RefundIssued(sale=sale, lines=ONE))
    await net.pull(HQ, T2)
    for name in (HQ, T2):
        [c] = await net.conflicts(name, "refund_unknown_sale")
        assert c.subject == sale and c.events == [refund]
    await net.heal()
    assert await net.same_everywhere("refund_unknown_sale") == []


async def test_receipt_collision(net: Net) -> None:
    a = await net.do(T1, sale_body([("A", 1, 100)], receipt="R-7"))
    b = await net.do(T2, sale_body([("B", 1, 100)], receipt="R-7"))
    await net.heal()
    [c] = await net.same_everywhere("receipt_collision")
    assert c.subject == "R-7" and c.events == [a, b]
    await net.resolve(T1, c.id, "accept")
    await _resolved_everywhere(net, "receipt_collision", c.id, "accept")


async def test_count_during_sales_then_recount(net: Net) -> None:
    await net.do(T2, StockReceived(sku="A", qty=10), 1_000_000)
    await net.heal()
    count = await net.do(T2, StockCounted(sku="A", count=10), 2_000_000)
    sale = await net.do(T1, sale_body([("A", 1, 100)]), 2_001_000)  # 1 s later, other till
    await net.do(HQ, StockReceived(sku="A", qty=3), 2_001_500)  # HQ's own stock: not s1's
    await net.heal()
    [c] = await net.same_everywhere("count_during_sales")
    assert c.subject == "A" and c.store == "s1" and c.events == [sale, count]
    net.now = 9_000_000  # the recount happens later, away from the sales
    await net.resolve(T2, c.id, "recount", count=8)
    await _resolved_everywhere(net, "count_during_sales", c.id, "recount")
    assert [await net.stock(n) for n in NAMES] == [8, 8, 8]


async def test_a_clock_ahead_is_seen_by_receivers_but_is_not_state(net: Net) -> None:
    """Whether an event is 'too far ahead' is each receiver's own judgement: it is noted
    by the receiving logs, and neither the state nor the conflicts depend on it."""
    net.skew[T2] = 10 * 60_000  # ten minutes ahead: beyond the 60 s the clocks accept
    ev = await net.do(T2, StockReceived(sku="A", qty=1))
    await net.heal()
    digests = {n: await net.logs[n].read(queries.state_digest) for n in NAMES}
    assert len(set(digests.values())) == 1, digests
    assert [await net.conflicts(n) for n in NAMES] == [[], [], []]
    (raw,) = await net.logs[T2].read_range(T2, int(ev.rsplit(":", 1)[1]), 1)
    for receiver in (HQ, T1):
        assert net.logs[receiver].clock_ahead[T2] == (1, decode_event(raw).hlc)
    assert net.logs[T2].clock_ahead == {}  # its own events are never ahead of itself


async def test_unknown_conflict_and_bad_actions(net: Net) -> None:
    with pytest.raises(UnknownConflict):
        await net.resolve(HQ, "000000000000", "accept")
    await net.do(T1, sale_body([("A", 1, 100)], receipt="R-1"))
    await net.do(T2, sale_body([("A", 1, 100)], receipt="R-1"))
    await net.heal()
    [c] = await net.conflicts(HQ, "receipt_collision")
    with pytest.raises(ConflictError, match="cannot be resolved by choose_price"):
        await net.resolve(HQ, c.id, "choose_price", price=1)
    await net.resolve(HQ, c.id, "accept")
    with pytest.raises(ConflictError, match="already resolved"):
        await net.resolve(HQ, c.id, "accept")
