"""`tillmesh demo`, shortened, as a subprocess: real replica processes, real faults.

The demo checks itself; this test does not take its word for it. It reads every
replica's log file afterwards and checks the printed claims against them: one digest
per store, HQ's view of each store folding to that digest, HQ's stock of each store
equal to that store's tills', the printed number of sales on every replica, and no
process left behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from conflict import queries
from core.sqlite import open_sync
from replicas.demo.checks import scoped_digest
from replicas.demo.story import Demo
from replicas.site import load_site

DEMO = [sys.executable, "-m", "replicas.cli.main", "demo"]


def run_demo(data: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DEMO, "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_db(path: Path) -> tuple[str, int, dict[str, dict[str, int]]]:
    """(digest, number of sales, stock per store) of a replica's log file."""
    conn = open_sync(path, readonly=True)
    try:
        summary = queries.sales_summary(conn)
        return queries.state_digest(conn), summary.sales, queries.stock_by_store(conn)
    finally:
        conn.close()


def leftovers(data: Path) -> list[int]:
    """Processes still running whose command line or nats conf names the data folder."""
    root = str(data.resolve())
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(root in arg for arg in p.info["cmdline"] or []):
            found.append(p.info["pid"])
    return found


def test_short_demo_converges_and_matches_the_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = run_demo(
        data, "--stores", "2", "--tills", "2", "--duration", "6", "--seed", "3", "--products", "60"
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    # Plain output off a terminal: one line per phase, no live screen.
    for phase in ("Starting", "HQ down", "Store 1 split", "Till crash", "Converging"):
        assert re.search(rf"^\[\s*[\d.]+s\] {phase}: ", out, re.M), phase
    m = re.search(r"^CONVERGED: (\d+) replicas, (\d+) sales", out, re.M)
    assert m, out
    assert int(m[1]) == 5
    printed_sales = int(m[2])
    assert printed_sales > 0

    site = load_site(data)
    _, hq_sales, hq_stock = read_db(data / "hq" / "log.db")
    total = 0
    for store, tills in site.stores.items():
        facts = [read_db(data / store / till / "log.db") for till in tills]
        assert all(stock == {store: hq_stock[store]} for _, _, stock in facts), store
        digests = {digest for digest, _, _ in facts}
        assert len(digests) == 1, f"{store}: tills disagree: {digests}"
        hq_view = scoped_digest(data / "hq" / "log.db", f"{store}/{tills[0]}", site.price_policy)
        assert digests == {hq_view}, f"{store}: HQ's events of the store fold differently"
        counts = {sales for _, sales, _ in facts}
        assert len(counts) == 1
        total += counts.pop()
    assert total == hq_sales == printed_sales
    assert leftovers(data) == [], "the demo left processes running"


def test_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("not the demo's")
    result = run_demo(tmp_path, timeout=60)
    assert result.returncode == 1
    assert "was not made by `tillmesh demo`" in result.stdout + result.stderr
    assert precious.read_text() == "not the demo's"


@pytest.mark.parametrize(
    ("stores", "cut", "down"),
    [
        (1, "sells on among its tills", "the store's tills lose"),
        (2, "s2 still reaches HQ", "all 2 stores lose"),
        (3, "s2, s3 still reach HQ", "all 3 stores lose"),
    ],
)
def test_phase_texts_name_the_stores_the_site_has(
    tmp_path: Path, stores: int, cut: str, down: str
) -> None:
    """`demo --stores 1` said "store 2 still reaches HQ" and "both stores lose"."""
    demo = Demo(root=tmp_path / "site", stores=stores, tills=1)
    demo._init_site()
    cut_text = f"store 1 sells on among its tills{demo._others_still_reach_hq()}"
    assert cut_text.endswith(cut) and "store 2" not in cut_text
    assert f"{demo._every_store()} lose" == down
