"""HQ's dashboard in headless Chromium, over real till and HQ processes, with HQ on
SQLite and on PostgreSQL (`tillmesh hq --db postgresql://...`): the page loads from HQ
alone, its figures are the API's (open conflicts included: the tills' unstocked sales
oversell), and a till stopped by its PID shows offline within seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from broker.subjects import HQ
from tests.browser_kit import ARTIFACTS, CHROMIUM_ARGS, UI_TIMEOUT_MS
from tests.e2e.harness import Mesh, running_mesh, wait_until
from tests.e2e.hq_pg import WorkerProc

pytestmark = pytest.mark.browser
async_api = pytest.importorskip("playwright.async_api")  # a test extra
expect = async_api.expect

STORES = {"s1": ["t1", "t2"], "s2": ["t1"]}
GONE = "s2/t1"
OFFLINE_WITHIN_MS = 10_000  # leaf link drops at once; the page polls every 2 s


def money(minor: int) -> str:
    return f"{minor / 100:.2f}"


async def _api(m: Mesh, offset: int) -> dict[str, Any]:
    r = await m.client(HQ).get(f"{m[HQ].url}/dashboard/data", params={"utc_offset": offset})
    r.raise_for_status()
    data: dict[str, Any] = r.json()
    return data


async def _check_matches_api(page: Any, m: Mesh) -> dict[str, Any]:
    """Every figure the page shows, against the API's answer (nothing moves meanwhile)."""
    offset = int(await page.evaluate("-new Date().getTimezoneOffset()"))
    data = await _api(m, offset)
    totals = data["totals"]
    await expect(page.locator("#total-takings")).to_have_text(money(totals["takings"]))
    await expect(page.locator("#total-sales")).to_have_text(str(totals["sales"]))
    await expect(page.locator("#total-deferred")).to_have_text(money(totals["deferred_exposure"]))
    await expect(page.locator("#total-not-at-hq")).to_have_text(str(totals["not_at_hq"]))
    for store in data["stores"]:
        card = page.locator(f'[data-store="{store["store"]}"]')
        await expect(card.locator('[data-field="store-takings"]')).to_have_text(
            money(store["takings"])
        )
        await expect(card.locator('[data-field="store-conflicts"]')).to_have_text(
            f"{store['open_conflicts']} open conflicts"
        )
        for till in store["tills"]:
            row = card.locator(f'tr[data-till="{till["till"]}"]')
            cells = {
                "online": None, "not_at_hq": str(till["not_at_hq"]),
                "deferred": money(till["deferred_exposure"]), "sales": str(till["sales"]),
                "takings": money(till["takings"]),
            }  # fmt: skip
            for field, text in cells.items():
                if text is not None:
                    await expect(row.locator(f'[data-field="{field}"]')).to_have_text(text)
            online = row.locator('[data-field="online"]')
            await expect(online).to_have_attribute("data-value", str(till["online"]).lower())
        for hour in store["per_hour"]:
            bar = card.locator(f'rect[data-hour="{int(hour["hour"][11:13])}"]')
            await expect(bar).to_have_attribute("data-net", str(hour["net"]))
    return data


async def test_dashboard_shows_the_chain_live(chromium: Path, tmp_path: Path) -> None:
    async with running_mesh(tmp_path, STORES) as m:
        await m.sell("s1/t1", 4)
        await m.sell("s2/t1", 3)
        await m.sell_card("s1/t2", 2599)
        await m.wait_converged()
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                await _drive(browser, m)
            finally:
                await browser.close()


async def test_dashboard_on_postgres_shows_the_chain_live(
    chromium: Path, tmp_path: Path, pg_dsn: str
) -> None:
    m = Mesh(tmp_path, STORES)
    m.procs[HQ] = WorkerProc(m, pg_dsn, 0, 1)  # HQ on PostgreSQL, one ingest worker
    try:
        await m.start()
        await m.sell("s1/t1", 4)
        await m.sell("s2/t1", 3)
        await m.sell_card("s1/t2", 2599)

        async def at_hq() -> bool:  # every acknowledged sale in PostgreSQL, and in the fold
            status = await m[HQ].status()
            return status["sales"]["sales"] == 8 and status["digest"] is not None

        await wait_until(at_hq, "HQ on PostgreSQL to hold every sale", 60)
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                await _drive(browser, m, "-pg")
            finally:
                await browser.close()
    finally:
        assert await m.close() == []


async def _drive(browser: Any, m: Mesh, shots: str = "") -> None:
    hq = m[HQ].url
    page = await browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(UI_TIMEOUT_MS)
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{hq}/dashboard")
    await expect(page.locator("#poll-state")).to_have_text("live")
    for till in m.tills:  # the leaf links are watched once a second: all up first
        row = page.locator(f'tr[data-till="{till}"] [data-field="online"]')
        await expect(row).to_have_attribute("data-value", "true")

    data = await _check_matches_api(page, m)
    assert data["totals"]["sales"] == 8 and data["totals"]["deferred_exposure"] == 2599
    assert data["totals"]["takings"] == m.oracle.gross  # cash sales, no voids or refunds
    assert data["totals"]["open_conflicts"] > 0  # sold with no stock received: oversells
    await expect(page.locator("#total-conflicts")).to_have_text(
        str(data["totals"]["open_conflicts"] + data["chain_conflicts"])
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"hq-dashboard{shots}.png"), full_page=True)

    # A till stops (its process, by PID): the page says so within seconds.
    assert m[GONE].stop() == []
    stopped = time.monotonic()
    gone = page.locator(f'tr[data-till="{GONE}"] [data-field="online"]')
    await expect(gone).to_have_attribute("data-value", "false", timeout=OFFLINE_WITHIN_MS)
    print(f"\n{GONE} shown offline {time.monotonic() - stopped:.1f} s after it stopped")
    await expect(page.locator('[data-store="s2"] [data-field="store-online"]')).to_have_text(
        "0/1 tills online"
    )
    await _check_matches_api(page, m)
    shot = ARTIFACTS / f"hq-dashboard{shots}-till-offline.png"
    await page.screenshot(path=str(shot), full_page=True)
    # Everything the page needed came from HQ itself: it works with no internet.
    assert all(u.startswith(hq) for u in requested), [u for u in requested if hq not in u]
    assert not errors, errors
