"""`tillmesh demo`, shortened, as a subprocess: real replica processes, real faults; and
`tillmesh demo --lan`, shortened, on emulated machines (skipped, saying why, where network
namespaces cannot be made), and its refusal without root or namespaces.

The demo checks itself; this test does not take its word for it. It reads every
replica's log file afterwards and checks the printed claims against them: one digest
per store, HQ's view of each store folding to that digest, HQ's stock of each store
equal to that store's tills', the printed number of sales on every replica, and no
process (nor, with --lan, namespace) left behind.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

from conflict import queries
from core.sqlite import open_sync
from replicas.cli.main import main
from replicas.demo.checks import processor_check, scoped_digest, scoped_digest_of
from replicas.demo.lan import story as lan_story
from replicas.demo.model import Model, SaleRecord
from replicas.demo.netlab.runs import KIT
from replicas.demo.netlab.runs import leftovers as lab_leftovers
from replicas.demo.story import Demo
from replicas.hq import facts as pg_facts
from replicas.hq.cluster import LocalPostgres, postgres_missing
from replicas.payments.acquirer import AskIn, Behaviour, CaptureIn, Ledger
from replicas.site import load_site
from tests.pan_scan import scan_for_pans
from tests.unprivileged import run_unprivileged

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
    check_files(data, printed_sales)
    check_store_override(data, out)
    assert leftovers(data) == [], "the demo left processes running"
    # Cards: the payments report split by settlement, checked against the model; the
    # acquirer's records are a file the run left too, and no file holds a card number.
    assert "card payments at HQ (payments report)" in out and "deferred, then captured" in out
    assert (data / "acquirer" / "acquirer.db").exists()
    assert scan_for_pans(data) == []


def check_store_override(data: Path, out: str) -> None:
    """Store 1's manager marked one SKU down: store 1's tills sell at it, store 2's at
    the chain price, HQ shows the chain price and the override apart (issue 21)."""
    m = re.search(r"store 1 marks (SKU-\d+) down to ([\d.]+) \(chain price ([\d.]+)\)", out)
    assert m, out
    sku, price, chain = m[1], round(float(m[2]) * 100), round(float(m[3]) * 100)
    site = load_site(data)
    for store, tills in site.stores.items():
        for till in tills:
            conn = open_sync(data / store / till / "log.db", readonly=True)
            try:
                shown = queries.product(conn, sku, store)
            finally:
                conn.close()
            assert shown is not None and shown["price"] == (price if store == "s1" else chain)
    conn = open_sync(data / "hq" / "log.db", readonly=True)
    try:
        at_hq = queries.product(conn, sku)
    finally:
        conn.close()
    assert at_hq is not None and (at_hq["price"], at_hq["overrides"]) == (chain, {"s1": price})


def check_files(data: Path, printed_sales: int) -> None:
    """The printed number of sales, and one state per store (HQ's view of it included),
    in the replicas' log files."""
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


# --- demo --lan ------------------------------------------------------------------------------

LAN_PHASES = (
    "Network",
    "Starting",
    "Store 1 WAN cut",
    "Store 1 on LTE",
    "Store 1 alone",
    "Store 1 back",
    "Cable pulled",
    "HQ machine lost",
    "Converging",
)


def test_lan_demo_tells_the_network_story_and_converges(
    tmp_path: Path, netns_ready: list[str]
) -> None:
    """2 stores x 2 tills and 3 HQ machines (fewer tills than the default: the test's
    minute); the phases in order, store 1 on LTE before it sells on over it, the proof,
    the files, and nothing left: no process, no namespace of the run."""
    data = tmp_path / "data"
    args = ["--lan", "--data", str(data), "--tills", "2", "--duration", "5", "--products", "40"]
    demo = subprocess.Popen(
        [*DEMO, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    out, _ = demo.communicate(timeout=240)
    assert demo.returncode == 0, out
    said = [m[1] for m in re.finditer(r"^\[\s*[\d.]+s\] ([^:]+): ", out, re.M)]
    assert [p for p in said if p in LAN_PHASES] == list(LAN_PHASES), said
    on_lte = re.search(r"seen on LTE [\d.]+ s after the cut \((.*?)\)", out)
    assert on_lte, out
    links = dict(link.split(" ", 1) for link in on_lte[1].split(", "))
    assert links.keys() == {"s1/t1", "s1/t2"}, links
    assert all(re.fullmatch(r"lte via hq\d?", link) for link in links.values()), links
    m = re.search(r"^CONVERGED: (\d+) replicas, (\d+) sales", out, re.M)
    assert m and int(m[1]) == 5, out
    check_files(data, int(m[2]))
    assert leftovers(data) == [], "the demo left processes running"
    assert lab_leftovers(f"{KIT}{demo.pid}") == [], "the demo left its machines"


def test_lan_demo_without_root_says_why_and_makes_nothing(shared_dir: Path) -> None:
    said = run_unprivileged(
        "import sys; from replicas.cli.main import main; "
        "sys.exit(main(['demo', '--lan', '--data', 'data']))",
        shared_dir,
    )
    assert said.returncode == 2, said.stdout + said.stderr
    assert "demo --lan cannot run here: it needs root" in said.stderr, said.stderr
    assert not (shared_dir / "data").exists()


def test_lan_demo_without_namespaces_says_why_and_makes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(lan_story.os, "geteuid", lambda: 0)
    monkeypatch.setattr(lan_story, "netns_unavailable", lambda: "`ip netns add` failed: no")
    assert main(["demo", "--lan", "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "demo --lan cannot run here: network namespaces unavailable here: `ip netns" in err
    assert not (tmp_path / "data").exists()


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A folder PostgreSQL's user may enter (pytest's tmp_path is root's alone)."""
    missing = postgres_missing()
    if missing:
        pytest.skip(missing)
    root = Path(tempfile.mkdtemp(prefix="tillmesh-demo-pg-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_short_demo_on_postgres_matches_the_tills(pg_data_dir: Path) -> None:
    """HQ on PostgreSQL through the same story (HQ SIGKILLed and restarted included):
    afterwards, with every process gone, PostgreSQL started again on the demo's folder
    holds each acknowledged sale once (the printed count, the tills' stores summed), each
    store's stock as its tills have it, and HQ's events of each store fold to the tills'
    digest."""
    data = pg_data_dir / "data"
    args = ("--stores", "2", "--tills", "2", "--duration", "6", "--seed", "3", "--products", "60")
    result = run_demo(data, *args, "--hq-db", "postgresql")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "HQ on PostgreSQL" in out
    m = re.search(r"^CONVERGED: (\d+) replicas, (\d+) sales", out, re.M)
    assert m, out
    assert leftovers(data) == [], "the demo left processes running"
    site = load_site(data)
    with LocalPostgres(data / "postgres") as pg:
        sales, stock, _ = pg_facts.facts(pg.dsn)
        for store, tills in site.stores.items():
            facts = [read_db(data / store / till / "log.db") for till in tills]
            levels = {sku: n for (s, sku), n in stock.items() if s == store}
            assert all({k: v for k, v in st[store].items() if v} == levels for _, _, st in facts), (
                store
            )
            hq_view = scoped_digest_of(
                pg_facts.event_batches(pg.dsn), f"{store}/{tills[0]}", site.price_policy
            )
            assert {digest for digest, _, _ in facts} == {hq_view}, store
        till_sales = sum(read_db(data / s / t[0] / "log.db")[1] for s, t in site.stores.items())
        assert len(sales) == till_sales == int(m[2])


def test_the_processor_check_counts_each_charge_once_and_no_reversed_one(tmp_path: Path) -> None:
    """The demo's check of the acquirer's ledger (`processor_check`), on a real ledger:
    an online approval, a deferred card's capture sharing the reference of the
    authorisation that got no answer, and a reversed approval (no sale stored)."""
    ledger = Ledger(tmp_path / "acquirer.db")
    up = Behaviour()
    try:
        ledger.decide(
            "authorise", AskIn(key="k1", token="tok_visa_0001", last4="4242", amount=500), up
        )
        lost = AskIn(key="k2", token="tok_visa_0002", last4="4242", amount=700)
        ledger.decide("authorise", lost, up)  # approved; the till heard nothing
        capture = CaptureIn(key="s1/t1:9#0", token="tok_visa_0002", last4="4242", amount=700,
                            attempt="k2")  # fmt: skip
        ledger.decide("capture", capture, up)
        ledger.decide(
            "authorise", AskIn(key="k3", token="tok_visa_0003", last4="4242", amount=900), up
        )
        ledger.reverse("k3")
    finally:
        ledger.close()
    model = Model()
    model.sales["a"] = SaleRecord("a", "s1/t1", [], 500, "card", card="online")
    model.sales["b"] = SaleRecord("b", "s1/t1", [], 700, "card", card="deferred")
    check = processor_check(tmp_path / "acquirer.db", model)
    assert check.ok, check
    assert "charged 1200 in 2 charges" in check.detail and "1 reversed" in check.detail
    model.sales["c"] = SaleRecord("c", "s1/t1", [], 900, "card", card="online")  # not stored
    assert not processor_check(tmp_path / "acquirer.db", model).ok


def _ask(key: str, token: str, amount: int) -> AskIn:
    return AskIn(key=key, token=token, last4="4242", amount=amount)
