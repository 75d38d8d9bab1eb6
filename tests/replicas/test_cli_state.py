"""`tillmesh state`: a till shows its store's stock; HQ shows every store's apart, each
equal to what that store's own tills show."""

from __future__ import annotations

import pytest

from tests.replicas.ops_kit import Built, Site, cli, cli_json, with_site


async def _everyone_catches_up(site: Site) -> None:
    await site.open("hq", "s1/t1", "s1/t2", "s2/x1")
    await site.sync("hq", "s1/t1", "s1/t2", "s2/x1")


def test_hq_state_has_each_stores_stock_as_its_tills_have_it(
    built: Built, capsys: pytest.CaptureFixture[str]
) -> None:
    with_site(built.root, _everyone_catches_up)
    states = {rid: cli_json(capsys, "state", built.db(rid))[1] for rid in ("hq", "s1/t1", "s2/x1")}
    hq, s1, s2 = states["hq"], states["s1/t1"], states["s2/x1"]
    # s1 counted A at 14:21; s2 never received A: one store's count is not the other's.
    assert s1["stock"] == {"A": 20, "B": 7} and s2["stock"] == {"A": -13}
    assert hq["stock_by_store"] == {"s1": s1["stock"], "s2": s2["stock"]}
    assert s1["stock_by_store"] == {"s1": s1["stock"]}

    code, text, _ = cli(capsys, "state", built.db("hq"))
    assert code == 0
    assert "stock s1 2 SKUs, 27 units on hand" in text
    assert "stock s2 1 SKUs, -13 units on hand" in text
    code, text, _ = cli(capsys, "state", built.db("s1/t1"))
    assert "stock    2 SKUs, 27 units on hand" in text
