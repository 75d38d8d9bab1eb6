"""The design card's libraries, measured: what the README's "Dependencies" section says
tillmesh uses each for, and why, comes from this run.

- msgpack: tillmesh writes msgpack, through msgspec Structs; beside it msgpack-python
  (untyped dicts, then the same checks by hand would still be owed) and pydantic
  validating the same dict, per sale event decoded with its body.
- aiosqlite: an `await` per statement against one hop into aiosqlite's thread for a whole
  batch (what core/sqlite.run_in_thread does), 2,000 inserts in one transaction.
Figures are per operation in the same run, so the ratios are what to read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import msgpack  # type: ignore[import-untyped]
import pydantic
import pytest

from core.bodies import Payment, SaleCompleted, SaleLine
from core.events import decode_checked_body, decode_event, encode_event
from core.sqlite import connect, run_in_thread
from tests.bench.conftest import table
from tests.factories import chain

pytestmark = pytest.mark.bench
ROUNDS = 20_000


class LineModel(pydantic.BaseModel):
    """The sale line's rules as a pydantic model (the hot path's alternative)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    sku: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)]
    qty: Annotated[int, pydantic.Field(gt=0, le=100_000)]
    unit_price: Annotated[int, pydantic.Field(ge=0, le=10**12)]
    discount: int = 0
    tax: int = 0
    tax_rate_bp: int = 0


class PaymentModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    method: Literal["cash", "card", "other"]
    amount: Annotated[int, pydantic.Field(gt=0, le=10**12)]


class SaleModel(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    receipt: Annotated[str, pydantic.StringConstraints(min_length=1, max_length=64)]
    lines: Annotated[list[LineModel], pydantic.Field(min_length=1, max_length=500)]
    payments: list[PaymentModel]


def per_op_us(fn: Callable[[], object], rounds: int = ROUNDS) -> float:
    """Best of three timings of `rounds` calls, in µs per call."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / rounds * 1e6


def test_bench_event_codecs() -> None:
    body = SaleCompleted(
        receipt="s1-t1-000042",
        lines=[SaleLine(sku="SKU-000001", qty=2, unit_price=1250),
               SaleLine(sku="SKU-000002", qty=1, unit_price=399)],
        payments=[Payment(method="cash", amount=2899)],
    )  # fmt: skip
    event = chain("s1/t1", [body])[0]
    raw = encode_event(event)
    as_dict = {
        "receipt": body.receipt,
        "lines": [{"sku": ln.sku, "qty": ln.qty, "unit_price": ln.unit_price} for ln in body.lines],
        "payments": [{"method": p.method, "amount": p.amount} for p in body.payments],
    }
    packed = msgpack.packb(["s1/t1", 1, 1 << 16, 1, "sale.completed", msgpack.packb(as_dict), b""])

    def msgspec_typed() -> object:
        return decode_checked_body(decode_event(raw))

    def msgpack_untyped() -> object:
        envelope = msgpack.unpackb(packed)
        return msgpack.unpackb(envelope[5])

    def msgpack_then_pydantic() -> object:
        envelope = msgpack.unpackb(packed)
        return SaleModel.model_validate(msgpack.unpackb(envelope[5]))

    ours = per_op_us(msgspec_typed)
    rows = [
        ("msgspec Structs (tillmesh)", f"{ours:6.2f} µs", "typed, constrained, text screened"),
        ("msgpack-python, dicts", f"{per_op_us(msgpack_untyped):6.2f} µs", "no checks at all"),
        (
            "msgpack-python + pydantic",
            f"{per_op_us(msgpack_then_pydantic):6.2f} µs",
            "typed and constrained, no text screen",
        ),
        (
            "encode (msgspec)",
            f"{per_op_us(lambda: encode_event(event)):6.2f} µs",
            f"{len(raw)} bytes on the wire",
        ),
        (
            "encode (msgpack-python)",
            f"{per_op_us(lambda: msgpack.packb(as_dict)):6.2f} µs",
            "the body alone",
        ),
    ]
    table("decode one sale event with its body (µs per event, best of 3)", rows)
    assert decode_checked_body(decode_event(raw)) == body


async def test_bench_aiosqlite_batch_against_await_per_statement(tmp_path: Path) -> None:
    rows = [(i, b"x" * 200) for i in range(2000)]
    conn = await connect(tmp_path / "a.db")
    try:
        await conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        t0 = time.perf_counter()
        await conn.execute("BEGIN")
        for row in rows:
            await conn.execute("INSERT INTO t VALUES (?, ?)", row)
        await conn.execute("COMMIT")
        awaited = (time.perf_counter() - t0) / len(rows) * 1e6
        await conn.execute("DELETE FROM t")

        def batch(raw: object) -> None:
            raw.execute("BEGIN")  # type: ignore[attr-defined]
            raw.executemany("INSERT INTO t VALUES (?, ?)", rows)  # type: ignore[attr-defined]
            raw.execute("COMMIT")  # type: ignore[attr-defined]

        t0 = time.perf_counter()
        await run_in_thread(conn, batch)
        batched = (time.perf_counter() - t0) / len(rows) * 1e6
        count = await (await conn.execute("SELECT count(*) FROM t")).fetchone()
    finally:
        await conn.close()
    table(
        "2,000 inserts in one transaction through aiosqlite (µs per row)",
        [
            ("await per statement", f"{awaited:6.2f} µs", "aiosqlite's public API"),
            (
                "one thread hop per batch",
                f"{batched:6.2f} µs",
                f"run_in_thread, core/sqlite.py ({awaited / batched:.0f}x fewer µs)",
            ),
        ],
    )
    assert count is not None and count[0] == len(rows)
