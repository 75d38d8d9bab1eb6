"""The till page in a real headless Chromium against a real till API server.

uvicorn serves `create_app` on 127.0.0.1 (ephemeral port) from a thread with its own
event loop, over a real EventLog; Playwright drives Debian's Chromium. Needs the
`playwright` Python package (a test extra) and Debian's /usr/bin/chromium, which
`make test`'s set-up installs where missing (a test never installs anything).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conflict import queries
from conflict.state import StoreState
from core.log import EventLog
from replicas.api.tokens import TokenStore
from tests.browser_kit import ARTIFACTS, CHROMIUM_ARGS, UI_TIMEOUT_MS
from tests.replicas.server_kit import TILL, TillServer

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")  # a test extra
expect = sync_api.expect


@pytest.fixture
def till(tmp_path: Path) -> Iterator[TillServer]:
    server = TillServer(tmp_path / "till.db")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    if server.error is not None:
        raise server.error


def sales_in_log(db: Path, receipt: str) -> list[dict[str, Any]]:
    """Read the sale from the log file with a second, independent EventLog."""

    async def read() -> list[dict[str, Any]]:
        async with await EventLog.open(db, TILL, StoreState()) as log:
            return await log.read(lambda c: queries.sale_by_receipt(c, receipt))

    return asyncio.run(read())


def test_cash_sale_on_the_till_page(chromium: Path, till: TillServer) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            receipt = _drive_sale(browser, till)
        finally:
            browser.close()
    [sale] = sales_in_log(till.db, receipt)
    assert (sale["total"], sale["change"], sale["origin"]) == (550, 450, TILL)
    assert [(ln["sku"], ln["qty"]) for ln in sale["lines"]] == [("COLA", 2), ("BREAD", 1)]
    assert [(p["method"], p["amount"]) for p in sale["payments"]] == [("cash", 1000)]


def _drive_sale(browser: Any, till: TillServer) -> str:
    url = till.url
    page = browser.new_page(viewport={"width": 1100, "height": 700})
    page.set_default_timeout(UI_TIMEOUT_MS)
    requested: list[str] = []
    errors: list[str] = []
    page.on("request", lambda req: requested.append(req.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)

    expect(page.locator("#net-state")).to_have_text("offline")
    expect(page.locator("#unsynced")).to_have_text("2 events not yet at HQ")
    expect(page.locator("#replica-id")).to_have_text(TILL)

    scan(page, "NOPE")
    expect(page.locator("#message")).to_contain_text("no product with that code or name")
    for sku in ("COLA", "BREAD", "COLA"):
        scan(page, sku)
    rows = page.locator("#basket-lines tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".qty")).to_have_text("2")
    expect(rows.nth(0).locator(".line-total")).to_have_text("3.00")
    expect(page.locator("#total")).to_have_text("5.50")

    page.fill("#tendered", "10")
    page.click("#pay-cash")
    expect(page.locator("#receipt")).to_be_visible()
    expect(page.locator("#sale-view")).to_be_hidden()
    expect(page.locator("#receipt-total")).to_have_text("5.50")
    expect(page.locator("#receipt-change")).to_have_text("4.50")
    # Is it safe at HQ yet? Not while offline; the receipt says so once HQ holds it.
    delivery = page.locator("#receipt-delivery")
    expect(delivery).to_have_text("not yet at HQ (held by this till only)")
    assert till.replica is not None
    till.replica.hq_holds_all = True
    expect(delivery).to_have_text("safe at HQ (also held by hq)")
    receipt = str(page.locator("#receipt-no").inner_text())
    assert receipt.startswith("P-")  # the page's own, one per basket (safe retries)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "till-page.png"), full_page=True)

    page.click("#new-sale")
    expect(page.locator("#basket-lines tr")).to_have_count(0)
    # Everything the page needed came from the till itself: it works with the network cut.
    assert all(u.startswith(url) for u in requested), [u for u in requested if url not in u]
    assert not [e for e in errors if "404" not in e], errors  # GET /shift: none open, a 404
    return receipt


def test_a_lost_answer_is_queued_and_sells_once(chromium: Path, till: TillServer) -> None:
    """The till makes the sale but its answer never reaches the page (Wi-Fi drops): the
    page keeps the sale in its queue and sends it again with the same receipt; the till
    answers with the sale it already made, and the receipt turns from queued to sold."""
    lost: list[str] = []

    def lose_first_answer(route: Any) -> None:
        if route.request.method == "POST" and not lost:
            route.fetch()  # the till gets the sale and makes it durable...
            lost.append(route.request.post_data or "")
            route.abort("connectionreset")  # ...and the answer is lost
        else:
            route.continue_()

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.route("**/sales", lose_first_answer)
            page.goto(till.url)
            scan(page, "COLA")
            expect(page.locator("#basket-lines tr")).to_have_count(1)
            page.fill("#tendered", "2")
            page.click("#pay-cash")
            expect(page.locator("#receipt")).to_be_visible()
            receipt = str(page.locator("#receipt-no").inner_text())
            expect(page.locator("#receipt-sale-id")).not_to_have_text("—")  # acknowledged
            expect(page.locator("#receipt-queued")).to_be_hidden()
            expect(page.locator("#queue-state")).to_have_text("")
        finally:
            browser.close()
    assert lost and len(sales_in_log(till.db, receipt)) == 1


def scan(page: Any, sku: str) -> None:
    page.fill("#sku", sku)
    page.press("#sku", "Enter")


def test_api_docs_render_from_the_till_alone(chromium: Path, till: TillServer) -> None:
    """Integrators open /docs on a till whose internet is down: Swagger UI must render
    from the till's own assets and list the API's operations."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            requested: list[str] = []
            page.on("request", lambda req: requested.append(req.url))
            page.goto(f"{till.url}/docs")
            expect(page.locator(".opblock-summary-path").first).to_be_visible()
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    assert "/sales" in [p.replace("\u200b", "") for p in paths]
    assert all(u.startswith(till.url) for u in requested), requested


def test_a_page_pairs_with_a_token_before_it_sells(chromium: Path, tmp_path: Path) -> None:
    """With tokens issued the page gets 401s: it asks to be paired, once, then sells
    with its own token (a deliberate step; an open demo till needs none)."""
    tokens = TokenStore(tmp_path / "api-tokens.json")
    token = tokens.issue("till page t1", "cashier")
    server = TillServer(tmp_path / "till.db", tokens=tokens)
    server.start()
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(server.url)
            expect(page.locator("#pair-form")).to_be_visible()
            expect(page.locator("#net-state")).to_have_text("till service unreachable")
            page.fill("#pair-token", token)
            page.press("#pair-token", "Enter")
            expect(page.locator("#pair-form")).to_be_hidden()
            expect(page.locator("#net-state")).to_have_text("offline")  # paired: status read
            scan(page, "COLA")
            page.fill("#tendered", "1.50")
            page.click("#pay-cash")
            expect(page.locator("#receipt")).to_be_visible()
            browser.close()
    finally:
        server.stop()


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (768, 1024)], ids=["till", "tablet"])
def test_the_page_is_legible_on_a_till_screen_and_a_tablet(
    chromium: Path, till: TillServer, width: int, height: int
) -> None:
    """Nothing runs off the side of the screen, and every field and button has a name a
    screen reader says (a label, or an aria-label on the basket's own controls)."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(UI_TIMEOUT_MS)
            page.goto(till.url)
            scan(page, "COLA")
            expect(page.locator("#basket-lines tr")).to_have_count(1)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            unnamed = page.evaluate(
                """[...document.querySelectorAll('input, button, select')]
                   .filter((el) => !(el.labels && el.labels.length) && !el.ariaLabel
                                   && !el.textContent.trim())
                   .map((el) => el.outerHTML)"""
            )
        finally:
            browser.close()
    assert overflow <= 0
    assert unnamed == []
