"""`log diff`: missing ranges, byte-level disagreement, state difference, exit status."""

# ruff: noqa: F811  (pytest fixtures imported from the kit are parameters here)
from __future__ import annotations

import pytest
from test_ops_kit import (  # noqa: F401  (fixtures)
    Built,
    Site,
    built,
    cli,
    cli_json,
    pristine_site,
    reference_digest,
    sale,
    with_site,
)


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
