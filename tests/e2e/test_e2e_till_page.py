"""A cashier's shift on the till page, in headless Chromium (Playwright's async API),
against real `tillmesh` processes: HQ (the catalog's author) and two tills of a store.

- A whole shift: open with a float, ten sales found by name search and by scanning
  codes (any case), tax on screen, a refund a manager approves, a void, close with the
  cash counted. The shift figures the page shows equal the till's, and every replica of
  the store holds the same.
- The till's server killed (SIGKILL) mid-shift: the page, reloaded from its service
  worker, keeps selling into its queue; once the till is back every queued sale is
  acknowledged, exactly once, and the page shows the queue drained.
"""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from replicas.api.tax import line_tax
from replicas.api.tokens import TOKENS_FILE, TokenStore
from tests.browser_kit import ARTIFACTS, CHROMIUM_ARGS
from tests.e2e.harness import Mesh, wait_until

pytestmark = pytest.mark.browser
async_api = pytest.importorskip("playwright.async_api")  # a test extra
expect = async_api.expect

UI_TIMEOUT_MS = 20_000  # real processes on a busy machine
TILL, PEER = "s1/t1", "s1/t2"
# SKU -> (name, price, tax rate in basis points): prices include tax (the default).
PRODUCTS = {
    "MILK-1L": ("Milk 1 l", 129, 700),
    "BREAD-WH": ("White bread", 249, 700),
    "WINE-RED": ("Red wine Rioja", 899, 2000),
    "SOAP-HND": ("Hand soap", 350, 2000),
    "APPLE-KG": ("Apples 1 kg", 300, 0),
}


class Store:
    """The running site, the tokens of the till page and of its manager."""

    def __init__(self, mesh: Mesh, page_token: str, manager_token: str) -> None:
        self.mesh, self.page_token, self.manager_token = mesh, page_token, manager_token

    def url(self, rid: str = TILL) -> str:
        return self.mesh[rid].url

    async def get(self, rid: str, path: str) -> Any:
        r = await self.mesh.client(rid).get(f"{self.url(rid)}{path}")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    mesh = Mesh(tmp_path, {"s1": ["t1", "t2"]})
    tokens = {}
    for rid in (TILL, PEER):  # closed APIs: the page pairs, a manager approves
        data = mesh[rid].data_dir
        data.mkdir(parents=True, exist_ok=True)
        issued = TokenStore(data / TOKENS_FILE)
        tokens[rid] = (
            issued.issue("till page", "cashier"),
            issued.issue("manager badge", "manager", person="MGR-ANA"),
        )
        mesh.tokens[rid] = tokens[rid][1]  # the test's own reads
    try:
        await mesh.start()
        for sku, (name, price, rate) in PRODUCTS.items():
            body = {"name": name, "price": price, "tax_rate_bp": rate}
            r = await mesh.client("hq").put(f"{mesh['hq'].url}/catalog/{sku}", json=body)
            assert r.status_code == 200, r.text
        for rid in (TILL, PEER):
            await wait_until(lambda rid=rid: _has_catalog(mesh, rid), f"catalog at {rid}", 30)
        yield Store(mesh, *tokens[TILL])
    finally:
        assert not await mesh.close()


async def _has_catalog(mesh: Mesh, rid: str) -> bool:
    r = await mesh.client(rid).get(f"{mesh[rid].url}/catalog")
    return r.status_code == 200 and {p["sku"] for p in r.json()} >= set(PRODUCTS)


async def _browser(pw: Any, chromium: Path) -> Any:
    return await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)


async def _open_page(browser: Any, store: Store) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    await page.goto(store.url())
    await expect(page.locator("#pair-form")).to_be_visible()
    await page.fill("#pair-token", store.page_token)
    await page.press("#pair-token", "Enter")
    await expect(page.locator("#net-state")).to_have_text("online")
    return page


async def _scan(page: Any, code: str) -> None:
    await page.fill("#sku", code)
    await page.press("#sku", "Enter")


async def _search(page: Any, words: str) -> None:
    """Type part of a name, arrow down to the first result, Enter: no mouse."""
    await page.fill("#sku", words)
    await expect(page.locator("#results li").first).to_be_visible()
    await page.press("#sku", "ArrowDown")
    await page.press("#sku", "Enter")


def _money(text: str) -> int:
    whole, _, cents = text.strip().partition(".")
    return int(whole) * 100 + int(cents or 0)


async def _sell_cash(page: Any, items: list[tuple[str, str]], shot: str = "") -> dict[str, Any]:
    """Ring up `items` ((how, what): "scan" a code or "search" words), pay cash with
    tendered rounded up to whole units; returns what the receipt showed."""
    for how, what in items:
        await (_scan if how == "scan" else _search)(page, what)
    await expect(page.locator("#basket-lines tr")).to_have_count(len({w for _, w in items}))
    total = _money(await page.locator("#total").inner_text())
    tendered = (total + 99) // 100 * 100
    await page.fill("#tendered", f"{tendered // 100}.00")
    if shot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    await page.press("#tendered", "Enter")
    await expect(page.locator("#receipt")).to_be_visible()
    shown = {
        "receipt": await page.locator("#receipt-no").inner_text(),
        "total": _money(await page.locator("#receipt-total").inner_text()),
        "change": _money(await page.locator("#receipt-change").inner_text()),
        "tax": sum(_money(t) for t in await page.locator("#receipt-tax td.num").all_inner_texts()),
        "names": await page.locator("#receipt-lines td:first-child").all_inner_texts(),
    }
    assert shown["total"] == total and shown["change"] == tendered - total
    await page.press("#new-sale", "Enter")
    await expect(page.locator("#sale-view")).to_be_visible()
    return shown


SHIFT_SALES: list[list[tuple[str, str]]] = [
    [("scan", "milk-1l"), ("scan", "BREAD-WH")],
    [("search", "rioja")],
    [("search", "soap"), ("scan", "apple-kg")],
    [("scan", "WINE-RED"), ("scan", "WINE-RED")],
    [("search", "white bread")],
    [("scan", "soap-hnd"), ("search", "milk")],
    [("scan", "Apple-Kg")],
    [("search", "apples"), ("scan", "milk-1l")],
    [("scan", "bread-wh"), ("scan", "wine-red"), ("scan", "soap-hnd")],
    [("search", "hand")],
]


async def test_a_whole_shift_on_the_till_page(chromium: Path, store: Store) -> None:
    async with async_api.async_playwright() as pw:
        browser = await _browser(pw, chromium)
        try:
            page = await _open_page(browser, store)
            shift = await _open_shift(page)
            sales = [
                await _sell_cash(page, items, shot="till-page-basket.png" if i == 8 else "")
                for i, items in enumerate(SHIFT_SALES)
            ]
            refunded = await _refund_with_manager(page, store, sales[3]["receipt"])
            await _void(page, sales[6]["receipt"])
            figures = await _close_shift(page, store)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "till-page-shift.png"), full_page=True)
        finally:
            await browser.close()
    for sale, items in zip(sales, SHIFT_SALES, strict=True):
        names = {PRODUCTS[_sku_of(how, what)][0] for how, what in items}
        assert set(sale["names"]) == names  # product names, not codes
        found = await store.get(TILL, f"/receipts/{sale['receipt']}")
        [stored] = found["sales"]
        store.mesh.oracle.record(stored["id"], stored["receipt"], stored["total"])
        assert (stored["total"], sum(ln["tax"] for ln in stored["lines"])) == (
            sale["total"],
            sale["tax"],
        )
        assert sum(ln["tax"] for ln in stored["lines"]) == sum(
            line_tax(ln["qty"] * ln["unit_price"] - ln["discount"], ln["tax_rate_bp"], "inclusive")
            for ln in stored["lines"]
        )
    kept = [s for i, s in enumerate(sales) if i != 6]  # sale 6 was voided
    assert figures["tax"] == sum(s["tax"] for s in kept) - refunded["tax"]
    assert figures["net"] == sum(s["total"] for s in kept) - refunded["amount"]
    till_view = await store.get(TILL, f"/shifts/{shift}")
    assert (till_view["tax"], till_view["over_short"], till_view["net"]) == (
        figures["tax"],
        figures["over_short"],
        figures["net"],
    )
    await store.mesh.wait_converged()  # every replica of the store: the same figures
    assert await store.get(PEER, f"/shifts/{shift}") == till_view


def _sku_of(how: str, what: str) -> str:
    if how == "scan":
        return what.upper()
    words = what.lower().split()
    return next(
        s for s, (n, _, _) in PRODUCTS.items() if all(w in f"{n} {s}".lower() for w in words)
    )


async def _open_shift(page: Any) -> str:
    await page.keyboard.press("F6")
    await page.fill("#shift-float", "100.00")
    await page.press("#shift-float", "Enter")
    await expect(page.locator("#shift-close-form")).to_be_visible()
    shift = (await page.locator("#shift-state").inner_text()).removeprefix("shift ")
    await page.keyboard.press("F1")
    await expect(page.locator("#sku")).to_be_focused()
    return shift


async def _refund_with_manager(page: Any, store: Store, receipt: str) -> dict[str, int]:
    """Refund one of the two wines: the till needs a manager, who scans their badge."""
    await page.keyboard.press("F4")
    await page.fill("#find-receipt", receipt)
    await page.press("#find-receipt", "Enter")
    await expect(page.locator("#returns-sale")).to_be_visible()
    await page.fill(".refund-qty >> nth=0", "1")
    await page.fill("#returns-reason", "corked")
    await page.click("#refund")
    await expect(page.locator("#manager-dialog")).to_be_visible()
    await expect(page.locator("#manager-reason")).to_contain_text("manager")
    await page.fill("#manager-token", store.manager_token)
    await page.press("#manager-token", "Enter")
    message = page.locator("#returns-message")
    await expect(message).to_contain_text("refunded")
    amount, tax = [_money(x) for x in re.findall(r"\d+\.\d\d", await message.inner_text())]
    return {"amount": amount, "tax": tax}


async def _void(page: Any, receipt: str) -> None:
    await page.fill("#find-receipt", receipt)
    await page.press("#find-receipt", "Enter")
    await expect(page.locator("#returns-receipt")).to_have_text(receipt)
    await page.click("#void")
    await expect(page.locator("#returns-message")).to_contain_text("voided")


async def _close_shift(page: Any, store: Store) -> dict[str, int]:
    await page.keyboard.press("F6")  # the figures are read afresh from the till
    expected = _money(await page.locator("#shift-expected").inner_text())
    await page.fill(
        "#shift-counted-cash", f"{(expected - 150) // 100}.{(expected - 150) % 100:02d}"
    )
    await page.press("#shift-counted-cash", "Enter")  # closing needs a manager
    await expect(page.locator("#manager-dialog")).to_be_visible()
    await page.fill("#manager-token", store.manager_token)
    await page.press("#manager-token", "Enter")
    await expect(page.locator("#shift-over-short")).to_have_text("-1.50")
    return {
        "over_short": -150,
        "tax": _money(await page.locator("#shift-tax").inner_text()),
        "net": _money(await page.locator("#shift-net").inner_text()),
    }


async def test_the_page_sells_into_its_queue_while_the_till_is_down(
    chromium: Path, store: Store
) -> None:
    till = store.mesh[TILL]
    async with async_api.async_playwright() as pw:
        browser = await _browser(pw, chromium)
        try:
            page = await _open_page(browser, store)
            await page.wait_for_function("navigator.serviceWorker.controller !== null")
            shift = await _open_shift(page)
            online = await _sell_cash(page, [("scan", "MILK-1L")])
            till.kill(signal.SIGKILL)
            await expect(page.locator("#net-state")).to_have_text("till service unreachable")
            queued = [await _sell_queued(page, "SOAP-HND") for _ in range(2)]
            await page.reload()  # the shell from the service worker, the catalog from IndexedDB
            await expect(page.locator("#queue-state")).to_contain_text("2 queued")
            queued.append(await _sell_queued(page, "WINE-RED", shot="till-page-queued.png"))
            await expect(page.locator("#queue-state")).to_contain_text("3 queued")
            till.spawn(fresh=False)
            await till.wait_serving()
            await expect(page.locator("#queue-state")).to_have_text("", timeout=30_000)
        finally:
            await browser.close()
    for receipt in [online["receipt"], *queued]:
        found = await store.get(TILL, f"/receipts/{receipt}")
        assert len(found["sales"]) == 1, found  # acknowledged once, sold once
        assert found["sales"][0]["shift"] == shift  # into the shift the till has open
    assert (await store.get(TILL, f"/shifts/{shift}"))["sales"] == 4


async def _sell_queued(page: Any, code: str, shot: str = "") -> str:
    await _scan(page, code)
    await page.press("#tendered", "Enter")  # exact cash
    await expect(page.locator("#receipt-queued")).to_contain_text("not a sale yet")
    receipt = str(await page.locator("#receipt-no").inner_text())
    if shot:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    await page.press("#new-sale", "Enter")
    return receipt
