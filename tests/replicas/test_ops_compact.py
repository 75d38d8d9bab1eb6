"""`log compact` / `log rebuild`: causal stability over known vectors (HQ required),
verify and digest unchanged, and a compacted till still converges with one that was
offline through the compaction (via HQ, since it cannot serve below its base)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from core.log import read_stats
from tests.conflict.factory import assert_oversell_kept
from tests.replicas.ops_kit import (
    Built,
    Site,
    at,
    cli,
    cli_json,
    count_events,
    digest,
    sale,
    with_site,
)


def heads(path: Path) -> dict[str, tuple[int, int]]:
    with closing(sqlite3.connect(path)) as conn:
        return {o: (s, b) for o, s, b in conn.execute("SELECT origin, seq, base FROM heads")}


def seqs(path: Path, origin: str) -> list[int]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT seq FROM events WHERE origin=? ORDER BY seq", (origin,))
        return [s for (s,) in rows]


def sync_all(built: Built, *rids: str) -> None:
    async def go(site: Site) -> None:
        await site.open(*rids)
        await site.sync(*rids)

    with_site(built.root, go)


def test_compact_drops_what_everyone_holds_and_verify_digest_rebuild_still_agree(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_all(built, "hq", "s1/t1", "s1/t2")
    t1 = built.db("s1/t1")
    before, events_before = digest(t1), count_events(t1)
    peers = [built.db("hq"), built.db("s1/t2")]
    code, dry = cli_json(capsys, "log", "compact", t1, "--dry-run", "--peers-vv", *peers)
    assert code == 0 and dry["bases"] == {"hq": [0, 1], "s1/t1": [0, 15], "s1/t2": [0, 13]}
    assert count_events(t1) == events_before

    code, out = cli_json(capsys, "log", "compact", t1, "--vacuum", "--peers-vv", *peers)
    assert code == 0 and out["verify_ok"]
    assert out["dropped"] == events_before - 3  # the head event of each origin stays
    assert heads(t1) == {"hq": (2, 1), "s1/t1": (16, 15), "s1/t2": (14, 13)}
    assert seqs(t1, "s1/t1") == [16]
    assert digest(t1) == before
    with closing(sqlite3.connect(t1)) as conn:  # status polls count from the heads
        assert read_stats(conn, t1, exact=False).events == count_events(t1) == 3
    code, text, _ = cli(capsys, "log", "verify", t1)
    assert code == 0 and text.rstrip().endswith("OK")

    code, rebuilt = cli_json(capsys, "log", "rebuild", t1)
    assert code == 0 and rebuilt["applied"] == 3
    assert rebuilt["digest"] == rebuilt["digest_before"] == before
    code, again = cli_json(capsys, "log", "compact", t1, "--peers-vv", *peers)
    assert code == 0 and again["dropped"] == 0 and again["bases"] == {}


def test_compact_never_drops_an_event_hq_lacks(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """HQ was cut off at 14:30: it holds s1/t1 to 12 and s1/t2 to 11, the tills more."""
    t1, hq = built.db("s1/t1"), built.db("hq")
    hq_heads = heads(hq)
    code, stats = cli_json(capsys, "log", "stats", hq)
    vectors = tmp_path / "hq.json"
    vectors.write_text(json.dumps(stats))  # HQ's vector as ops would copy it off HQ
    code, out = cli_json(capsys, "log", "compact", t1, "--peers-vv", vectors, built.db("s1/t2"))
    assert code == 0 and out["verify_ok"]
    assert out["floor"]["s1/t1"] == hq_heads["s1/t1"][0] == 12
    for origin in ("s1/t1", "s1/t2"):
        hq_seq = hq_heads[origin][0]
        assert seqs(t1, origin) == list(range(hq_seq + 1, heads(t1)[origin][0] + 1))
        assert heads(t1)[origin][1] == hq_seq


def test_compact_requires_hq_and_a_sane_vector_file(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    t1 = built.db("s1/t1")
    code, _, err = cli(capsys, "log", "compact", t1, "--peers-vv", built.db("s1/t2"))
    assert code == 2 and "'hq' is required" in err
    bad = tmp_path / "v.json"
    bad.write_text('{"hq": [1, 2]}')
    code, _, err = cli(capsys, "log", "compact", t1, "--peers-vv", bad)
    assert code == 2 and "JSON vectors must look like" in err
    assert count_events(t1) == 32


def test_other_stores_vectors_do_not_hold_back_compaction(
    built: Built, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sync_all(built, "hq", "s1/t1", "s1/t2")
    vectors = tmp_path / "v.json"
    vectors.write_text(json.dumps({"s2/x1": {"hq": 2, "s2/x1": 13}}))
    t1 = built.db("s1/t1")
    code, out = cli_json(
        capsys, "log", "compact", t1, "--peers-vv", built.db("hq"), built.db("s1/t2"), vectors
    )
    assert code == 0 and out["bases"]["s1/t1"] == [0, 15]


def test_a_compacted_till_converges_with_one_offline_through_it_via_hq(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    async def t3_joins_then_goes_offline(site: Site) -> None:
        await site.open("hq", "s1/t1", "s1/t2", "s1/t3")
        await site.pull("s1/t3", "hq")  # catalog and the first half hour, then offline
        await site.sync("hq", "s1/t1", "s1/t2")

    with_site(built.root, t3_joins_then_goes_offline)
    t1 = built.db("s1/t1")
    peers = [built.db("hq"), built.db("s1/t2")]  # t3 is not known: it was offline
    code, out = cli_json(capsys, "log", "compact", t1, "--peers-vv", *peers)
    assert code == 0 and out["bases"]["s1/t1"] == [0, 15]

    async def t3_returns(site: Site) -> None:
        await site.open("hq", "s1/t1", "s1/t2", "s1/t3")
        site.at(50)
        await site.append("s1/t3", sale("T3-1", "A", 3))
        await site.append("s1/t1", sale("T1-late", "B", 1, 400))
        # t1 cannot serve the range t3 lacks (it starts below t1's base): it answers with
        # nothing rather than a frame t3 could only hold, so t3 turns to HQ.
        await site.pull("s1/t3", "s1/t1")
        t3 = site.logs["s1/t3"]
        assert t3.head("s1/t1")[0] == 12
        assert (await t3.stats()).pending == 0
        await site.pull("s1/t3", "hq")  # HQ has the compacted range
        assert t3.head("s1/t1")[0] == 16
        await site.pull("s1/t3", "s1/t1")  # and now t1 can serve the rest, above its base
        assert t3.head("s1/t1")[0] == 17 and (await t3.stats()).pending == 0
        await site.sync("hq", "s1/t1", "s1/t2", "s1/t3")

    with_site(built.root, t3_returns)
    assert digest(built.db("s1/t3")) == digest(t1) == digest(built.db("s1/t2"))
    code, _, _ = cli(capsys, "log", "verify", t1)
    assert code == 0
    code, diff = cli_json(capsys, "log", "diff", built.db("hq"), t1)
    assert code == 0, diff
    code, rebuilt = cli_json(capsys, "log", "rebuild", t1)
    assert rebuilt["digest"] == rebuilt["digest_before"]


def test_replay_on_a_compacted_log_starts_from_the_snapshot_or_says_why_not(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    sync_all(built, "hq", "s1/t1", "s1/t2")
    t1 = built.db("s1/t1")
    cli(capsys, "log", "compact", t1, "--peers-vv", built.db("hq"), built.db("s1/t2"))
    code, out = cli_json(capsys, "log", "replay", t1, "--until", at(60))
    assert code == 0 and out["state"]["digest"] == digest(t1)
    assert [e["id"] for e in out["events"]] == ["hq:2", "s1/t2:14", "s1/t1:16"]
    code, _, err = cli(capsys, "log", "replay", t1, "--until", at(20))
    assert code == 2 and "compacted away" in err and "HQ" in err


def test_a_locked_database_is_a_one_line_error(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    t1 = built.db("s1/t1")
    holder = sqlite3.connect(t1, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=WAL")
        holder.execute("BEGIN IMMEDIATE")  # a writer holds the lock past busy_timeout
        code, _, err = cli(capsys, "log", "compact", t1, "--peers-vv", built.db("hq"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 2 and err.startswith("tillmesh: error: ") and "locked" in err
    assert err.count("\n") == 1


def test_a_till_compacted_by_the_previous_fold_opens_after_the_upgrade(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fold 5 retired st_skewed, fold 6 added tax columns. A log compacted under fold 4
    (its snapshot made by 4) refused to open ('restore this replica from HQ'): every
    compacted till of a store would have been down after the upgrade."""
    sync_all(built, "hq", "s1/t1", "s1/t2")
    t1 = built.db("s1/t1")
    before = digest(t1)
    peers = [built.db("hq"), built.db("s1/t2")]
    assert cli_json(capsys, "log", "compact", t1, "--peers-vv", *peers)[0] == 0
    with closing(sqlite3.connect(t1)) as conn, conn:  # as fold 4 would have left it
        conn.execute("UPDATE meta SET value = '4' WHERE key IN ('fold_version',"
                     " 'snapshot_fold_version')")  # fmt: skip
        conn.execute("CREATE TABLE snap_st_skewed (eid TEXT PRIMARY KEY, origin, hlc)")
        conn.execute("ALTER TABLE snap_st_sales DROP COLUMN tax_mode")  # before fold 6
        conn.execute("ALTER TABLE snap_st_refund_lines DROP COLUMN tax")

    async def reopen(site: Site) -> None:
        await site.open("s1/t1")  # rebuilds the state on open: fold 4 -> 6

    with_site(built.root, reopen)
    assert digest(t1) == before
    with closing(sqlite3.connect(t1)) as conn:  # the oversell runs (fold 12) derived too
        assert_oversell_kept(conn)
