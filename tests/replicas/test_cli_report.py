"""`tillmesh report` on a real HQ log holding two stores' sales."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest

from conflict.state import StoreState
from core.events import CardDeclined, RefundIssued, RefundLine, SaleVoided
from core.log import EventLog
from replicas.cli.main import main
from replicas.hq.store import PgLog
from tests.conflict.factory import sale_body, taxed_sale


async def _hq_with_two_stores(root: Path, dsn: str | None) -> str:
    """s1/t1 sells twice (one voided), s2/t1 twice (the first by a card taken offline,
    which the processor declined; the second taxed 20 % on top of the price, half of it
    refunded with its tax); HQ ingests both tills' logs, into its
    SQLite log, or with `dsn` into PostgreSQL (the same reports must come out)."""
    tills = {rid: await EventLog.open(root / f"{rid[:2]}.db", rid, StoreState())
             for rid in ("s1/t1", "s2/t1")}  # fmt: skip
    kept = await tills["s1/t1"].append(sale_body([("A", 2, 150)], "R1"))
    gone = await tills["s1/t1"].append(sale_body([("B", 1, 40)], "R2"))
    await tills["s1/t1"].append(SaleVoided(sale=gone.id))
    offline = await tills["s2/t1"].append(sale_body([("A", 1, 150)], "R1", card="deferred"))
    await tills["s2/t1"].append(CardDeclined(payment=f"{offline.id}#0", reason="stolen card"))
    taxed = await tills["s2/t1"].append(taxed_sale(sale_body([("C", 1, 1000)], "R2"), [2000],
                                                   "exclusive"))  # fmt: skip
    back = RefundLine(line=0, qty=1, amount=600, tax=100)
    await tills["s2/t1"].append(RefundIssued(sale=taxed.id, lines=[back], restock=False))
    assert kept.seq == 1
    hq = await PgLog.open(dsn) if dsn else await EventLog.open(root / "hq.db", "hq", StoreState())
    for rid, log in tills.items():
        result = await hq.ingest_raw(await log.read_range(rid, 1, 100))
        assert not result.rejected
        await log.close()
    await hq.close()
    return dsn or str(root / "hq.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    return asyncio.run(_hq_with_two_stores(tmp_path, dsn))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_sales_by_store_as_csv(hq_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "report", "sales", hq_db, "--by", "store", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0
    assert [(r["store"], r["sales"], r["gross"], r["voided"], r["net"]) for r in rows] == [
        ("s1", "2", "340", "40", "300"),
        ("s2", "2", "1350", "0", "750"),
    ]


def test_payments_and_items_as_json_and_table(
    hq_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "report", "payments", hq_db, "--store", "s1", "--json")
    assert code == 0
    assert json.loads(out) == [
        {"store": "s1", "method": "cash", "auth": "", "settlement": "", "payments": 1,
         "amount": 300, "change_given": 0, "kept": 300}
    ]  # fmt: skip
    code, out, _ = _run(capsys, "report", "items", hq_db, "--top", "1")
    assert code == 0
    assert out.splitlines() == [  # the top SKU of each store
        "store  sku  qty  revenue  sales",  # revenue: before tax (s2's C is 1,000 + 200)
        "s1     A      2      300      1",
        "s2     C      1     1000      1",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--since", "2030-01-01", "--until", "2020-01-01"), "since must be before until"),
        (("--by", "store,weekday"), "grouping 'weekday': use store, till, day"),
        (("--utc-offset", "+25:00"), "not a UTC offset"),
        (("--since", "yesterday"), "not an ISO 8601 time"),
    ],
)
def test_bad_arguments_are_one_clear_line(
    hq_db: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    try:
        code = main(["report", "sales", hq_db, *argv])
    except SystemExit as e:  # argparse's own errors, after printing usage
        code = int(str(e.code))
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_stock_has_no_window(hq_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as usage:  # stock is the level now: no --since
        main(["report", "stock", hq_db, "--since", "2026-01-01"])
    assert usage.value.code == 2 and "unrecognized arguments: --since" in capsys.readouterr().err
    code, out, _ = _run(capsys, "report", "stock", hq_db, "--below", "0", "--csv")
    assert code == 0 and out.splitlines() == ["store,sku,on_hand", "s1,A,-2", "s2,A,-1", "s2,C,-1"]


def test_offsets_west_of_utc(hq_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bare `--utc-offset -03:00` is read by argparse as an option: two spellings work."""
    for argv in (["--utc-offset", "UTC-03:00"], ["--utc-offset=-03:00"]):
        code, out, _ = _run(capsys, "report", "sales", hq_db, "--by", "store", *argv, "--json")
        assert code == 0 and [r["sales"] for r in json.loads(out)] == [2, 2], argv


def test_declined_cards_and_their_settlement(
    hq_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "report", "declines", hq_db)
    assert code == 0 and out.splitlines() == [
        "store  outcome   decision  payments  amount",
        "s2     declined  open             1     150",
    ]
    code, out, _ = _run(capsys, "report", "payments", hq_db, "--store", "s2", "--json")
    assert code == 0
    assert [(r["method"], r["auth"], r["settlement"], r["amount"]) for r in json.loads(out)] == [
        ("card", "deferred", "declined", 150), ("cash", "", "", 1200),
    ]  # fmt: skip
    code, out, _ = _run(capsys, "report", "declines", hq_db, "--store", "s1", "--json")
    assert code == 0 and json.loads(out) == []


def test_tax_per_store_day_and_rate(hq_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "report", "tax", hq_db, "--json")
    assert code == 0
    day = json.loads(out)[0]["day"]
    assert json.loads(out) == [  # rate None: sales from before tills computed tax
        {"store": "s1", "day": day, "rate_bp": None, "lines": 1, "gross": 300, "tax": 0,
         "refunded_tax": 0, "net_tax": 0},
        {"store": "s2", "day": day, "rate_bp": None, "lines": 1, "gross": 150, "tax": 0,
         "refunded_tax": 0, "net_tax": 0},
        {"store": "s2", "day": day, "rate_bp": 2000, "lines": 1, "gross": 1200, "tax": 200,
         "refunded_tax": 100, "net_tax": 100},
    ]  # fmt: skip
    code, out, _ = _run(capsys, "report", "tax", hq_db, "--store", "s2")
    assert code == 0 and out.splitlines()[0].split() == [
        "store", "day", "rate_bp", "lines", "gross", "tax", "refunded_tax", "net_tax"
    ]  # fmt: skip
    assert out.splitlines()[2].split() == ["s2", day, "2000", "1", "1200", "200", "100", "100"]
