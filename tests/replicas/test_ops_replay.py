"""`log replay` and `log dump` on a real store day."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.clock import pack
from core.events import (
    Payment,
    RefundIssued,
    RefundLine,
    SaleCompleted,
    SaleLine,
    StockReceived,
    parse_event_id,
)
from tests.replicas.ops_kit import (
    Built,
    Site,
    at,
    cli,
    cli_json,
    product,
    received,
    reference_digest,
    with_site,
)


def hlc_at(minutes: float) -> int:
    from tests.replicas.ops_kit import MINUTE, T0

    return pack(T0 + int(minutes * MINUTE), 0)


def test_replay_until_gives_the_state_of_exactly_the_events_before(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    code, out = cli_json(capsys, "log", "replay", db, "--until", at(20))
    assert code == 0
    expected = reference_digest(built.root, db, "WHERE hlc < ?", (hlc_at(20),))
    assert out["state"]["digest"] == expected
    assert all(e["hlc"] < hlc_at(20) for e in out["events"])
    last = out["events"][-1]
    assert (last["sales"], last["gross"]) == (
        out["state"]["sales"]["sales"],
        out["state"]["sales"]["gross"],
    )


def test_replay_upto_cuts_in_hlc_order_including_the_event(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    upto = built.ids["s1/t2"][4]  # a sale of s1/t2 at 14:15
    code, out = cli_json(capsys, "log", "replay", db, "--upto", upto)
    assert code == 0
    assert out["events"][-1]["id"] == upto
    cut = out["cut"]["hlc"]
    origin, seq = parse_event_id(upto)
    expected = reference_digest(
        built.root, db, "WHERE (hlc, origin, seq) <= (?, ?, ?)", (cut, origin, seq)
    )
    assert out["state"]["digest"] == expected


def test_replay_running_stock_follows_receipts_sales_counts_and_voids(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli_json(capsys, "log", "replay", built.db("s1/t2"), "--until", at(60))
    assert code == 0
    stock_a = [e["stock"]["A"] for e in out["events"] if "A" in e["stock"]]
    assert stock_a[0] == 50  # received
    assert 30 in stock_a  # the count at 14:21 resets it
    assert stock_a[-1] == out["state"]["stock"]["A"]
    assert out["state"]["sales"]["voided"] == 500  # the void at 14:41


def test_replay_at_hq_shows_each_event_its_own_store_s_stock(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    _, hq = cli_json(capsys, "log", "replay", built.db("hq"), "--until", at(60))
    _, till = cli_json(capsys, "log", "replay", built.db("s1/t2"), "--until", at(60))

    def stock_a(out: dict[str, Any], store: str) -> dict[str, int]:
        return {e["id"]: e["stock"]["A"] for e in out["events"] if "A" in e["stock"]
                and e["origin"].startswith(store + "/")}  # fmt: skip

    # s1's events that HQ held by then show s1's stock at HQ as on the till: s2's sales
    # of A do not count in it (HQ holds fewer of them: the till had not synced them all).
    at_hq, on_till = stock_a(hq, "s1"), stock_a(till, "s1")
    assert len(at_hq) >= 5 and {i: on_till[i] for i in at_hq} == at_hq
    s2_sales = [e for e in hq["events"] if e["origin"] == "s2/x1" and e["type"] == "sale.completed"]
    assert list(stock_a(hq, "s2").values())[-1] == -len(s2_sales)  # s2 never received A


def test_replay_store_filter_and_table_output(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    hq = built.db("hq")
    code, out = cli_json(capsys, "log", "replay", hq, "--until", at(60), "--store", "s2")
    assert code == 0
    assert {e["origin"] for e in out["events"]} == {"hq", "s2/x1"}
    assert out["state"]["digest"] == reference_digest(
        built.root, hq, "WHERE origin IN ('hq', 's2/x1')", ()
    )
    code, text, _ = cli(capsys, "log", "replay", hq, "--until", at(10), "--store", "s1")
    assert code == 0
    assert "s1/t1:3" in text and "s2/x1" not in text
    assert [row[0] for row in _stock_rows(text)] == ["s1", "s1"]


def test_replay_of_an_unknown_event_is_a_clear_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "log", "replay", built.db("s1/t1"), "--upto", "s1/t1:999")
    assert code == 2 and out == ""
    assert err == "tillmesh: error: replay: no event s1/t1:999 in this log\n"


def test_dump_filters_by_origin_type_and_time(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    code, out, _ = cli(
        capsys, "log", "dump", db, "--origin", "s1/t2", "--type", "sale.completed",
        "--since", at(10), "--until", at(20),
    )  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in records] == ["s1/t2:4", "s1/t2:5", "s1/t2:6"]
    assert all(r["body"]["lines"][0]["sku"] == "B" for r in records)


@pytest.mark.parametrize(
    "command", ["replay", "export", "import", "diff", "compact", "rebuild", "restore"]
)
def test_every_ops_command_has_an_example_and_json(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, "log", command, "--help")
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:\n  tillmesh log " + command in out and "--json" in out


async def two_stores_day(site: Site) -> dict[str, list[str]]:
    """HQ receives 4 A (HQ's own stock); till s1/t1 receives, sells A and B in one sale,
    and refunds line 0 (A) of it only."""
    await site.open("hq", "s1/t1")
    site.at(0)
    ids = {"hq": await site.append("hq", product("A", 250), received("A", 4))}
    await site.sync("hq", "s1/t1")
    site.at(1)
    lines = [SaleLine(sku="A", qty=3, unit_price=250), SaleLine(sku="B", qty=2, unit_price=400)]
    two_lines = SaleCompleted(
        receipt="R-2", lines=lines, payments=[Payment(method="cash", amount=1550)]
    )
    ids["s1/t1"] = await site.append("s1/t1", received("A", 100), received("B", 10), two_lines)
    site.at(2)
    refund = RefundIssued(sale=ids["s1/t1"][2], lines=[RefundLine(line=0, qty=1, amount=250)])
    ids["s1/t1"] += await site.append("s1/t1", refund)
    await site.sync("hq", "s1/t1")
    return ids


def test_replay_stock_is_the_replayed_store_s_never_a_sum_over_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_site(tmp_path, two_stores_day)
    till, hq = tmp_path / "s1-t1.db", tmp_path / "hq.db"
    until = ["--until", at(10), "--state-only"]
    code, text, _ = cli(capsys, "log", "replay", till, *until)
    assert code == 0 and _stock_rows(text) == [["s1", "A", "98"], ["s1", "B", "8"]]  # not A=102
    code, text, _ = cli(capsys, "log", "replay", hq, *until, "--store", "s1")
    assert code == 0 and _stock_rows(text) == [["s1", "A", "98"], ["s1", "B", "8"]]
    code, text, _ = cli(capsys, "log", "replay", hq, *until)
    assert code == 0 and _stock_rows(text) == [
        ["hq", "A", "4"],
        ["s1", "A", "98"],
        ["s1", "B", "8"],
    ]
    code, out = cli_json(capsys, "log", "replay", till, *until)
    assert code == 0
    assert (out["state"]["store"], out["state"]["stock"]) == ("s1", {"A": 98, "B": 8})
    code, out = cli_json(capsys, "log", "replay", hq, *until)
    assert code == 0 and out["state"]["stock"] is None
    assert out["state"]["stock_by_store"] == {"hq": {"A": 4}, "s1": {"A": 98, "B": 8}}


def test_a_refund_shows_the_stock_of_the_lines_it_refunded_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = with_site(tmp_path, two_stores_day)
    code, out = cli_json(capsys, "log", "replay", tmp_path / "s1-t1.db", "--until", at(10))
    assert code == 0
    by_id = {e["id"]: e["stock"] for e in out["events"]}
    assert by_id[ids["s1/t1"][2]] == {"A": 97, "B": 8}  # the sale moved both
    assert by_id[ids["s1/t1"][3]] == {"A": 98}  # the refund of line 0 restocked A only


def _stock_rows(text: str) -> list[list[str]]:
    """The state's stock table: a header row, then one row per (store, SKU)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("stock"))
    assert lines[start].split() == ["stock", "store", "sku", "on", "hand"], lines[start]
    return [line.split() for line in lines[start + 1 :]]


async def _receive_240_skus(site: Site) -> None:
    await site.open("s1/t1")
    await site.append("s1/t1", *[StockReceived(sku=f"SKU-{i:03d}", qty=1) for i in range(240)])


def test_state_only_prints_one_row_per_sku(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """A till of 240 SKUs printed them all on one line."""
    till = built.db("s1/t1")
    with_site(built.root, _receive_240_skus)
    code, text, _ = cli(capsys, "log", "replay", till, "--until", "2099-01-01", "--state-only")
    rows = _stock_rows(text)
    assert code == 0 and len(rows) == 242 and all(len(r) == 3 for r in rows)
    assert [line for line in text.splitlines()[1:] if len(line) > 100] == []  # 1st: the path


# --- checkpoints ------------------------------------------------------------------------------


def _replay(capsys: pytest.CaptureFixture[str], db: Path, *args: object) -> dict[str, Any]:
    code, out = cli_json(capsys, "log", "replay", db, *args)
    assert code == 0
    return out


@pytest.mark.parametrize("minutes", [5, 17.5, 29, 44])
def test_a_replay_from_a_checkpoint_equals_one_from_the_start(
    built: Built, capsys: pytest.CaptureFixture[str], minutes: float
) -> None:
    """Same state, same steps, same running totals: only where the fold starts differs."""
    db = built.db("s1/t1")
    args = ("--until", at(minutes), "--store", "s1", "--last", "6")
    plain = _replay(capsys, db, *args)
    assert plain["checkpoint"] is None
    code, out = cli_json(capsys, "log", "checkpoint", db, "--every", "7")
    assert code == 0 and out["written"] == [7 * (i + 1) for i in range(len(out["written"]))]
    resumed = _replay(capsys, db, *args)
    if minutes > 5:  # early on, no checkpoint lies before the last 6 events
        assert resumed["checkpoint"] is not None and resumed["folded"] < plain["folded"]
    assert resumed["state"] == plain["state"]
    assert resumed["events"] == plain["events"] and len(plain["events"]) <= 6
    expected = reference_digest(built.root, db, "WHERE hlc < ?", (hlc_at(minutes),))
    assert resumed["state"]["digest"] == expected


def test_checkpointing_again_continues_from_the_newest(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    db = built.db("s1/t1")
    _, first = cli_json(capsys, "log", "checkpoint", db, "--every", "10")
    _, again = cli_json(capsys, "log", "checkpoint", db, "--every", "10")
    assert first["written"] and again["written"] == []
    assert [c["events"] for c in again["checkpoints"]] == first["written"]
    before = _replay(capsys, db, "--until", at(60), "--state-only")
    assert before["checkpoint"] == first["written"][-1]


def test_a_checkpoint_of_another_chain_is_never_used(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """s1/t2's checkpoints copied beside s1/t1's log: another replica, never folded from."""
    t1, t2 = built.db("s1/t1"), built.db("s1/t2")
    cli_json(capsys, "log", "checkpoint", t2, "--every", "5")
    t2_dir = t2.with_name(t2.name + ".checkpoints")
    t2_dir.rename(t1.with_name(t1.name + ".checkpoints"))
    out = _replay(capsys, t1, "--until", at(60), "--state-only")
    assert out["checkpoint"] is None
    assert out["state"]["digest"] == reference_digest(built.root, t1, "", ())


def test_checkpoints_of_a_compacted_log_start_from_its_snapshot(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    t2 = built.db("s1/t2")
    whole = _replay(capsys, t2, "--until", at(60), "--state-only")
    code, _, _ = cli(capsys, "log", "compact", t2, "--peers-vv", built.db("hq"), built.db("s1/t1"))
    assert code == 0
    _, out = cli_json(capsys, "log", "checkpoint", t2, "--every", "4")
    assert out["written"]
    resumed = _replay(capsys, t2, "--until", at(60), "--state-only")
    assert resumed["checkpoint"] is not None
    assert resumed["state"] == whole["state"]


def test_events_that_arrive_late_and_older_than_a_checkpoint_are_replayed(
    tmp_path: Path,
) -> None:
    """A till's sales that reach the log only after a checkpoint was cut, stamped before
    it: a replay from that checkpoint folds them too, as one from the start does."""
    from contextlib import closing

    from conflict.state import StoreState
    from core.log import EventLog
    from core.sqlite import open_sync
    from replicas.ops.checkpoints import build_checkpoints
    from replicas.ops.replay import replay
    from tests.factories import cash_sale, chain
    from tests.replicas.ops_kit import run

    db = tmp_path / "hq.db"
    early = chain("s1/t1", [cash_sale("A", receipt=f"E{i}") for i in range(40)], 1 << 40)
    late = chain("s1/t2", [cash_sale("B", receipt=f"L{i}") for i in range(30)], (1 << 40) + 5)

    async def ingest(events: list[Any]) -> None:
        async with await EventLog.open(db, "hq", StoreState()) as log:
            assert not (await log.ingest(events)).rejected

    run(ingest(early))
    with closing(open_sync(db, readonly=True)) as conn:
        assert [c.events for c in build_checkpoints(conn, db, every=10)] == [10, 20, 30, 40]
    run(ingest(late))  # s1/t2's sales, stamped among s1/t1's first ones
    cut = (early[-1].hlc, "\U0010ffff", 1 << 62)
    with closing(open_sync(db, readonly=True)) as conn:
        whole = replay(conn, cut, lambda o: True, last=3)
        resumed = replay(conn, cut, lambda o: True, log_path=db, last=3)
    assert resumed.checkpoint is not None and resumed.checkpoint.events == 30  # before the steps
    assert resumed.state == whole.state and resumed.state["sales"]["sales"] == 70
    assert [s.event.id for s in resumed.steps] == [s.event.id for s in whole.steps]


def test_a_checkpoint_folded_with_another_price_policy_is_never_used(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """The effective catalog depends on the policy: a checkpoint of another one is stale."""
    import sqlite3
    from contextlib import closing

    db = built.db("s1/t1")
    _, out = cli_json(capsys, "log", "checkpoint", db, "--every", "10")
    assert _replay(capsys, db, "--until", at(60), "--state-only")["checkpoint"] is not None
    for ck in out["checkpoints"]:
        with closing(sqlite3.connect(ck["path"])) as conn, conn:
            conn.execute("UPDATE ck_meta SET value = 'lowest/5000' WHERE key = 'policy'")
    assert _replay(capsys, db, "--until", at(60), "--state-only")["checkpoint"] is None


def test_a_checkpoint_cut_before_a_revocation_is_never_used(tmp_path: Path) -> None:
    """HQ revokes a till after a checkpoint holds its later sales: the revocation only
    flags stored events (their hashes stay), so the checkpoint would still look current;
    a replay from it must equal one from the start, without the revoked sales."""
    from contextlib import closing

    from conflict.state import StoreState
    from core.events import KeyRevoked
    from core.log import EventLog
    from core.sqlite import open_sync
    from replicas.ops.checkpoints import build_checkpoints
    from replicas.ops.replay import replay
    from tests.factories import cash_sale, chain
    from tests.replicas.ops_kit import run

    db = tmp_path / "hq.db"
    sales = chain("s1/t1", [cash_sale("A", receipt=f"S{i}") for i in range(40)], 1 << 40)
    (revoke,) = chain("hq", [KeyRevoked(replica="s1/t1", after_seq=15)], (1 << 40) + 100)

    async def ingest(events: list[Any]) -> None:
        async with await EventLog.open(db, "hq", StoreState()) as log:
            assert not (await log.ingest(events)).rejected

    run(ingest(sales))
    with closing(open_sync(db, readonly=True)) as conn:
        assert [c.events for c in build_checkpoints(conn, db, every=10)] == [10, 20, 30, 40]
    run(ingest([revoke]))
    cut = (revoke.hlc, "\U0010ffff", 1 << 62)
    with closing(open_sync(db, readonly=True)) as conn:
        whole = replay(conn, cut, lambda o: True, last=3)
        resumed = replay(conn, cut, lambda o: True, log_path=db, last=3)
    assert whole.state["sales"]["sales"] == 15  # the revoked sales are not in it
    assert resumed.state == whole.state
    with closing(open_sync(db, readonly=True)) as conn:  # new checkpoints, cut after it
        assert build_checkpoints(conn, db, every=10)
        again = replay(conn, cut, lambda o: True, log_path=db, last=3)
    assert again.checkpoint is not None and again.state == whole.state


def test_revoked_events_among_the_last_steps_are_not_folded(tmp_path: Path) -> None:
    """The last events, folded one by one as steps, skip what HQ revoked as the batch
    fold does: the state is the same however many steps are asked for."""
    from contextlib import closing

    from conflict.state import StoreState
    from core.events import KeyRevoked
    from core.fold import FLAG_REVOKED
    from core.log import EventLog
    from core.sqlite import open_sync
    from replicas.ops.replay import replay
    from tests.factories import cash_sale, chain
    from tests.replicas.ops_kit import run

    db = tmp_path / "hq.db"
    sales = chain("s1/t1", [cash_sale("A", receipt=f"S{i}") for i in range(20)], 1 << 40)
    (revoke,) = chain("hq", [KeyRevoked(replica="s1/t1", after_seq=15)], (1 << 40) + 100)

    async def ingest() -> None:
        async with await EventLog.open(db, "hq", StoreState()) as log:
            assert not (await log.ingest(sales)).rejected
            assert not (await log.ingest([revoke])).rejected

    run(ingest())
    cut = (revoke.hlc, "\U0010ffff", 1 << 62)
    with closing(open_sync(db, readonly=True)) as conn:
        batch = replay(conn, cut, lambda o: True, last=0)
        stepped = replay(conn, cut, lambda o: True, last=8)
    assert batch.state["sales"]["sales"] == 15
    assert stepped.state == batch.state
    assert [s.flags & FLAG_REVOKED != 0 for s in stepped.steps] == [False] * 2 + [True] * 5 + [
        False
    ]
    assert [s.sales for s in stepped.steps] == [14] + [15] * 7
