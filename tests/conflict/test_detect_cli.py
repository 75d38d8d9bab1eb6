"""`tillmesh conflicts` and `tillmesh resolve` on replica files, and policy loading."""

from __future__ import annotations

import asyncio
import json
from contextlib import closing
from pathlib import Path

import pytest

from conflict.policies import Policies, PolicyError, from_state, load_policies
from conflict.state import StoreState
from core.events import PriceSet, ProductUpserted, StockReceived
from core.log import EventLog
from replicas.cli.common import open_db
from replicas.cli.conflicts import open_conflict_count
from replicas.cli.main import main

from .factory import sale_body


async def _two_tills_oversell(root: Path) -> Path:
    """t1 and t2 each sell the one unit of A, then t1 takes t2's events."""
    logs = [await EventLog.open(root / f"t{i}.db", f"s1/t{i}", StoreState()) for i in (1, 2)]
    await logs[0].append(StockReceived(sku="A", qty=1))
    await logs[1].ingest_raw(await logs[0].read_range("s1/t1", 1, 100))
    await logs[0].append(sale_body([("A", 1, 100)], "R1"))
    await logs[1].append(sale_body([("A", 1, 100)], "R1"))
    await logs[0].ingest_raw(await logs[1].read_range("s1/t2", 1, 100))
    for log in logs:
        await log.close()
    return root / "t1.db"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_resolve_and_list_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(asyncio.run(_two_tills_oversell(tmp_path)))
    code, out, _ = _run(capsys, "conflicts", db, "--json")
    found = json.loads(out)
    assert code == 0 and {c["kind"] for c in found} == {"oversell", "receipt_collision"}
    over = next(c for c in found if c["kind"] == "oversell")
    assert over["open"] and over["subject"] == "A" and over["store"] == "s1"
    code, out, _ = _run(capsys, "resolve", db, over["id"], "--action", "compensate",
                        "--by", "Ana", "--reason", "two in the back")  # fmt: skip
    assert code == 0 and "conflict.resolved" in out and "stock.adjusted" not in out
    code, out, _ = _run(capsys, "conflicts", db, "--json", "--open")
    assert [c["kind"] for c in json.loads(out)] == ["receipt_collision"]
    code, out, _ = _run(capsys, "conflicts", db)
    assert "compensate [A+1@s1] by Ana" in out and "two in the back" in out and "1 open" in out
    assert f"{over['id']}  oversell             A @s1" in out
    with closing(open_db(Path(db))) as conn:
        assert open_conflict_count(conn) == 1


async def _hq_holding(root: Path, till_db: Path) -> Path:
    till = await EventLog.open(till_db, "s1/t1", StoreState())
    hq = await EventLog.open(root / "hq.db", "hq", StoreState())
    for origin, seq in till.version_vector().items():
        await hq.ingest_raw(await till.read_range(origin, 1, seq))
    for log in (till, hq):
        await log.close()
    return root / "hq.db"


def test_hq_cannot_compensate_a_stores_oversell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hq = str(asyncio.run(_hq_holding(tmp_path, asyncio.run(_two_tills_oversell(tmp_path)))))
    code, out, _ = _run(capsys, "conflicts", hq, "--json", "--kind", "oversell")
    [over] = json.loads(out)
    code, _, err = _run(capsys, "resolve", hq, over["id"], "--action", "compensate",
                        "--by", "Ana", "--reason", "x")  # fmt: skip
    assert code == 2 and "resolve it on a till of store 's1'" in err


def test_resolve_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(asyncio.run(_two_tills_oversell(tmp_path)))
    code, _, err = _run(capsys, "resolve", db, "nosuchid", "--action", "accept",
                        "--by", "Ana", "--reason", "x")  # fmt: skip
    assert code == 2 and "no conflict with id 'nosuchid'" in err
    code, out, _ = _run(capsys, "conflicts", db, "--json", "--kind", "receipt_collision")
    cid = json.loads(out)[0]["id"]
    code, _, err = _run(capsys, "resolve", db, cid, "--action", "choose_price", "--price", "5",
                        "--by", "Ana", "--reason", "x")  # fmt: skip
    assert code == 2 and "use one of: accept" in err
    code, _, err = _run(capsys, "conflicts", str(tmp_path / "missing.db"))
    assert code == 2 and "no such database" in err


async def test_resolve_refuses_a_running_replica(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = await EventLog.open(tmp_path / "t1.db", "s1/t1", StoreState())
    try:
        await log.append(sale_body([("A", 1, 100)]))
        code = await asyncio.to_thread(
            main, ["resolve", str(tmp_path / "t1.db"), "x", "--action", "accept", "--by", "A",
                   "--reason", "r"],
        )  # fmt: skip
        assert code == 2 and "HTTP API" in capsys.readouterr().err
    finally:
        await log.close()


def test_policies_files(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('price = "hq_wins"\noversell = "flag_recount"\nconcurrency_window_ms = 2000\n')
    assert load_policies(toml) == Policies("hq_wins", "flag_recount", 2000)
    js = tmp_path / "p.json"
    js.write_text('{"price": "lowest"}')
    assert load_policies(js) == Policies(price="lowest")
    js.write_text('{"price": "cheapest"}')
    with pytest.raises(PolicyError, match="price"):
        load_policies(js)
    js.write_text('{"prise": "latest"}')
    with pytest.raises(PolicyError, match="prise"):
        load_policies(js)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policies(tmp_path / "none.toml")


async def test_policies_default_to_the_folds(tmp_path: Path) -> None:
    fold = StoreState(price_policy="lowest", concurrency_window_ms=1234)
    async with await EventLog.open(tmp_path / "h.db", "hq", fold) as log:
        await log.append(ProductUpserted(sku="A", name="tea", price=5))
        await log.append(PriceSet(sku="A", price=4))
        got = await log.read(from_state)
    assert got == Policies(price="lowest", concurrency_window_ms=1234)


def test_resolve_in_a_folder_named_with_uri_characters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The running-replica probe named `we` for `we#ird/t1.db` (and created it)."""
    folder = tmp_path / "we#ird"
    folder.mkdir()
    db = asyncio.run(_two_tills_oversell(folder)).rename(folder / "t1.db")
    code, out, _ = _run(capsys, "conflicts", str(db), "--json", "--kind", "receipt_collision")
    cid = json.loads(out)[0]["id"]
    code, out, err = _run(capsys, "resolve", str(db), cid, "--action", "accept",
                          "--by", "Ana", "--reason", "same customer")  # fmt: skip
    assert code == 0, err
    assert not (tmp_path / "we").exists()


def test_conflicts_kept_by_state_digest_are_those_of_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asked again of the same state: the kept answer. Of a state that moved on: found
    anew. `--recompute` folds the events afresh and agrees."""
    db = asyncio.run(_two_tills_oversell(tmp_path))
    kept = db.with_name(db.name + ".conflicts")
    first = _run(capsys, "conflicts", str(db), "--json")
    assert kept.exists() and kept.stat().st_mode & 0o077 == 0
    assert _run(capsys, "conflicts", str(db), "--json") == first
    assert _run(capsys, "conflicts", str(db), "--json", "--recompute")[:2] == first[:2]

    async def another_collision() -> None:
        async with await EventLog.open(db, "s1/t1", StoreState()) as log:
            await log.append(sale_body([("B", 1, 100)], "R1"))

    asyncio.run(another_collision())
    code, out, _ = _run(capsys, "conflicts", str(db), "--json", "--kind", "receipt_collision")
    [collision] = json.loads(out)
    assert code == 0
    assert collision["details"]["sales"] == 3  # not the kept 2
