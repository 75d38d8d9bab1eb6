"""`log replay` and `log dump` on a real store day."""

# ruff: noqa: F811  (pytest fixtures imported from the kit are parameters here)
from __future__ import annotations

import json
from typing import Any

import pytest
from test_ops_kit import (  # noqa: F401  (fixtures)
    Built,
    at,
    built,
    cli,
    cli_json,
    pristine_site,
    reference_digest,
)

from tillmesh.core.clock import pack
from tillmesh.core.events import parse_event_id


def hlc_at(minutes: float) -> int:
    from test_ops_kit import MINUTE, T0

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
    assert text.splitlines()[-1].startswith("stock")


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
