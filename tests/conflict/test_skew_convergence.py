"""Same events, same state, whatever each replica's clock says.

Replicas on real SQLite logs, each with its own wall clock skewed by any amount (up to
days ahead or behind), sell, receive stock and reprice, then sync; every replica that
holds the same events holds the same digest. Before fold version 5 a receiver stored
another till's events as 'skewed' by its own clock and the author did not, so a till a
day ahead left its store with two digests for good.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from conflict import queries
from core.events import HQ, PriceSet, ProductUpserted, StockReceived
from tests.factories import cash_sale

from .lognet import LogNet

NAMES = (HQ, "s1/t1", "s1/t2", "s1/t3")
DAY_MS = 86_400_000
_skews = st.lists(st.integers(-2 * DAY_MS, 2 * DAY_MS), min_size=len(NAMES), max_size=len(NAMES))
_steps = st.lists(
    st.tuples(
        st.sampled_from(NAMES), st.sampled_from(("sale", "stock", "price")), st.integers(0, 90_000)
    ),
    min_size=1,
    max_size=25,
)


def _body(kind: str, name: str, k: int) -> object:
    if kind == "price" and name == HQ:
        return PriceSet(sku="A", price=100 + k % 50)
    if kind == "stock":
        return StockReceived(sku="A", qty=1 + k % 5)
    return cash_sale(sku="A", receipt=f"{name}-{k}")


async def _run(root: Path, skews: list[int], steps: list[tuple[str, str, int]]) -> dict[str, str]:
    net = LogNet(NAMES)
    net.skew = dict(zip(NAMES, skews, strict=True))
    await net.open(root)
    try:
        await net.do(HQ, ProductUpserted(sku="A", name="product A", price=250))
        for k, (name, kind, advance_ms) in enumerate(steps):
            net.now += advance_ms
            await net.do(name, _body(kind, name, k))  # type: ignore[arg-type]
            if k % 7 == 6:
                await net.exchange()  # partial syncs along the way: clocks get observed
        await net.exchange()
        vectors = {n: net.logs[n].version_vector() for n in NAMES}
        assert len({tuple(sorted(v.items())) for v in vectors.values()}) == 1, vectors
        return {n: await net.logs[n].read(queries.state_digest) for n in NAMES}
    finally:
        await net.close()


@settings(max_examples=25, deadline=None)
@given(skews=_skews, steps=_steps)
def test_same_events_same_digest_whatever_the_clocks(
    skews: list[int], steps: list[tuple[str, str, int]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        digests = asyncio.run(_run(Path(tmp), skews, steps))
    assert len(set(digests.values())) == 1, (skews, digests)


def test_a_till_a_day_ahead_converges_with_its_store() -> None:
    """The reported case, pinned: one till a day ahead, every till selling."""
    steps = [(n, "sale", 5_000) for _ in range(4) for n in NAMES[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        digests = asyncio.run(_run(Path(tmp), [0, DAY_MS, 0, 0], steps))
    assert len(set(digests.values())) == 1, digests
