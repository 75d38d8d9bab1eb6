"""`log diff`: missing ranges, byte-level disagreement, state difference, exit status."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from functools import partial

import msgspec
import pytest

from core.events import decode_event, encode_event, event_hash
from tests.replicas.ops_kit import Built, Site, cli, cli_json, reference_digest, sale, with_site


def test_diff_names_the_ranges_hq_lacks_and_the_state_that_follows(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = cli_json(capsys, "log", "diff", built.db("hq"), built.db("s1/t1"))
    assert code == 1 and out["differs"]
    by_origin = {o["origin"]: o for o in out["origins"]}
    assert set(by_origin) == {"hq", "s1/t1", "s1/t2"}  # s2 is outside the till's scope
    assert by_origin["s1/t1"]["a_lacks"] == [13, 16]
    assert by_origin["s1/t2"]["a_lacks"] == [12, 14]
    assert by_origin["hq"]["a_lacks"] is None and by_origin["hq"]["disagree_count"] == 0
    state = out["state"]
    assert state["compared"]
    # HQ's side is HQ's events of the till's scope, folded apart from store s2's
    expected = reference_digest(built.root, built.db("hq"), "WHERE origin NOT LIKE 's2/%'", ())
    assert state["digest_a"] == expected
    assert state["sales"]["sales"] == [20, 26]
    assert state["stock"]["B"] == [10, 7]


def test_diff_of_converged_tills_is_the_same_and_exits_0(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = cli(capsys, "log", "diff", built.db("s1/t1"), built.db("s1/t2"))
    assert code == 0
    assert "common 1..16 identical" in text and "state digest: equal" in text
    assert text.splitlines()[-1] == "SAME"


def test_diff_finds_events_that_disagree_byte_for_byte(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """A twin of s1/t1 (a wrongly restored till) that re-used seqs 11-13 for other sales."""
    twin = built.root / "twin.db"

    async def make_twin(site: Site) -> None:
        await site.open("s1/t1")
        first_ten = await site.logs["s1/t1"].read_range("s1/t1", 1, 10)
        await site.close()
        site.root = built.root / "twin"
        site.root.mkdir()
        await site.open("s1/t1")
        await site.logs["s1/t1"].ingest_raw(first_ten, "test")
        site.at(50)
        await site.append("s1/t1", sale("DUP-1"), sale("DUP-2"), sale("DUP-3"))

    with_site(built.root, make_twin)
    (built.root / "twin" / "s1-t1.db").rename(twin)
    code, out = cli_json(capsys, "log", "diff", built.db("s1/t1"), twin)
    assert code == 1
    t1 = next(o for o in out["origins"] if o["origin"] == "s1/t1")
    assert t1["compared"] == [1, 13]
    assert (t1["disagree"], t1["disagree_count"]) == ([11, 12, 13], 3)
    assert t1["b_lacks"] == [14, 16]
    code, text, _ = cli(capsys, "log", "diff", built.db("s1/t1"), twin)
    assert "BYTES DIFFER at 3 seq(s): 11, 12, 13" in text


def delete_row(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM events WHERE origin = 's1/t1' AND seq = 7")


def alter_bytes(conn: sqlite3.Connection, *, rehash: bool = False) -> None:
    """s1/t1:5 re-stamped one tick later; its stored hash kept, or recomputed to match."""
    where = "WHERE origin = 's1/t1' AND seq = 5"
    raw, stored = conn.execute(f"SELECT raw, hash FROM events {where}").fetchone()
    ev = decode_event(raw)
    ev = msgspec.structs.replace(ev, hlc=ev.hlc + 1)
    new_hash = event_hash(ev) if rehash else stored
    conn.execute(f"UPDATE events SET raw = ?, hash = ? {where}", (encode_event(ev), new_hash))


DAMAGE: dict[str, tuple[Callable[[sqlite3.Connection], None], str]] = {
    "deleted row": (delete_row, "gap at s1/t1:8"),
    "altered bytes": (alter_bytes, "hash-mismatch at s1/t1:5"),
    "altered and re-hashed": (partial(alter_bytes, rehash=True), "chain-broken at s1/t1:6"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_diff_never_says_same_for_a_log_that_fails_verify(
    built: Built, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Heads and stored hashes equal, events not: the chain proves nothing unverified."""
    t1, t2 = built.db("s1/t1"), built.db("s1/t2")
    damage_fn, named = DAMAGE[damage]
    with closing(sqlite3.connect(t2)) as conn, conn:
        damage_fn(conn)
    code, text, err = cli(capsys, "log", "diff", t1, t2, "--verify")
    assert (code, err) == (1, "")
    lines = text.splitlines()
    assert lines[-1].startswith(f"DAMAGED: B fails verify ({named}")
    assert "s1/t1" in text and "NOT VERIFIED: B" in next(x for x in lines if x.startswith("s1/t1"))
    assert "SAME" not in lines
    code, out = cli_json(capsys, "log", "diff", t2, t1, "--verify")  # and the other way
    assert code == 1 and out["damaged"]
    assert [f"{f['kind']} at {f['origin']}:{f['seq']}" for f in out["defects"]["a"]] == [named]
    assert out["defects"]["b"] == []


def test_defects_outside_the_compared_scope_do_not_count(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """HQ's damaged copy of store s2 says nothing about what a till of s1 holds."""
    with closing(sqlite3.connect(built.db("hq"))) as conn, conn:
        conn.execute("DELETE FROM events WHERE origin = 's2/x1' AND seq = 3")
    code, out = cli_json(capsys, "log", "diff", built.db("s1/t1"), built.db("hq"), "--verify")
    assert code == 1 and out["differs"] and not out["damaged"]  # HQ lacks s1's late events


def test_tills_of_different_stores_are_never_the_same(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """They share HQ's origins only: agreeing there says nothing (it was SAME, exit 0)."""
    code, text, _ = cli(capsys, "log", "diff", built.db("s1/t1"), built.db("s2/x1"))
    assert code == 1
    last = text.strip().splitlines()[-1]
    assert last.startswith("DIFFERENT SCOPES: s1/t1 and s2/x1 hold different stores"), last
    assert "A holds s1/t1, s1/t2 outside" in last and "B holds s2/x1 outside" in last
    code, out = cli_json(capsys, "log", "diff", built.db("s1/t1"), built.db("s2/x1"))
    assert code == 1 and out["differs"] and out["scopes_differ"]
    assert (out["only_a"], out["only_b"]) == (["s1/t1", "s1/t2"], ["s2/x1"])


def test_hq_and_a_till_compare_over_the_tills_scope(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """HQ holds every store: its scope contains the till's, so they are comparable."""
    _, out = cli_json(capsys, "log", "diff", built.db("hq"), built.db("s1/t1"))
    assert not out["scopes_differ"] and out["only_a"] == out["only_b"] == []
