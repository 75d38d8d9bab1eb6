// The till page: wiring, status header, keyboard shortcuts, pairing. Plain ES modules,
// no build step and no outside resources, so it works with the network cut; a service
// worker (/sw.js) keeps the page itself loadable while the till's server is down.

import { TOKEN_KEY, api, whenUnauthorised } from "./api.js";
import { loadCatalog } from "./catalog.js";
import { kv } from "./db.js";
import { fmt } from "./money.js";
import { drain, onSettled, render as renderQueue, startDraining } from "./queue.js";
import { fromSaleView, markQueued, setShop, shownReceipt, showReceipt } from "./receipt.js";
import { findReceipt, refund, voidSale } from "./returns.js";
import * as sale from "./sale.js";
import { closeShift, loadShift, openShift } from "./shift.js";
import { $ } from "./ui.js";

const POLL_MS = 2000;
const CATALOG_MS = 60000;
const STATUS_TIMEOUT_MS = 1500; // a hung till must show as unreachable, not "online"

// --- views -------------------------------------------------------------------------

const VIEWS = { sale: "sale-view", returns: "returns-view", shift: "shift-view" };

function show(view) {
  $("receipt").hidden = true;
  for (const [name, id] of Object.entries(VIEWS)) {
    $(id).hidden = name !== view;
    $(`tab-${name}`).ariaPressed = String(name === view);
  }
  if (view === "sale") $("sku").focus();
  if (view === "returns") $("find-receipt").focus();
  if (view === "shift") {
    loadShift();
    ($("shift-close-form").hidden ? $("shift-float") : $("shift-counted-cash")).focus();
  }
}

// --- status header -------------------------------------------------------------------

async function pollStatus() {
  const badge = $("net-state");
  try {
    const s = await api("GET", "/status?digest=false&conflicts=false", undefined, { timeoutMs: STATUS_TIMEOUT_MS });
    $("replica-id").textContent = s.replica_id;
    badge.textContent = s.online ? "online" : "offline";
    badge.className = `badge ${s.online ? "online" : "offline"}`;
    const n = s.unsynced_to_hq;
    // Every own event counts (sales, refunds, stock moves), not only sales.
    $("unsynced").textContent = `${n} ${n === 1 ? "event" : "events"} not yet at HQ`;
    $("unsynced").className = n > 0 ? "unsynced pending" : "unsynced";
    // Card payments taken offline and not yet captured: the store carries their risk.
    const x = s.card_exposure;
    const held = x && x.payments > 0;
    $("card-exposure").textContent = held
      ? `${x.payments} offline card ${x.payments === 1 ? "payment" : "payments"} ${fmt(x.amount)} not yet captured`
      : "";
    $("card-exposure").className = held ? "unsynced pending" : "unsynced";
  } catch {
    badge.textContent = "till service unreachable";
    badge.className = "badge down";
  }
}

async function loadShop() {
  let shop;
  try {
    shop = await api("GET", "/shop");
    await kv.put("shop", shop);
  } catch {
    shop = await kv.get("shop");
  }
  if (!shop) return;
  setShop(shop);
  sale.setTaxMode(shop.tax_mode);
  $("store-name").textContent = shop.store_name;
  $("replica-id").textContent = shop.replica_id;
}

// --- pairing -------------------------------------------------------------------------

function showPairing() {
  $("pair-form").hidden = false;
  $("pair-token").focus();
}

async function pair(ev) {
  ev.preventDefault();
  const token = $("pair-token").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  $("pair-token").value = "";
  $("pair-form").hidden = true;
  await Promise.all([pollStatus(), loadShop(), loadCatalog()]); // a wrong token asks again
  $("sku").focus();
}

// --- a queued sale settles --------------------------------------------------------------

async function settled({ receipt, sold, refused }) {
  if (shownReceipt() !== receipt) return;
  if (refused) {
    markQueued("refused", refused);
    return;
  }
  try {
    showReceipt(fromSaleView(await api("GET", `/sales/${sold.sale_id}`), Date.parse(sold.at)));
  } catch {
    markQueued("sold");
  }
}

// --- keyboard ------------------------------------------------------------------------

const KEYS = {
  F1: () => show("sale"),
  F2: () => $("tendered").focus(),
  F3: () => sale.pay("card"),
  F4: () => show("returns"),
  F6: () => show("shift"),
  F8: () => window.print(),
};

function onKey(ev) {
  const action = KEYS[ev.key];
  if (action) {
    ev.preventDefault();
    action();
  } else if (ev.key === "Escape") {
    sale.showResults([]);
  }
}

function wireScan() {
  const input = $("sku");
  $("scan-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    input.value = "";
    sale.scanEntered(text);
  });
  input.addEventListener("input", () => sale.scanTyped(input.value.trim()));
  input.addEventListener("keydown", (ev) => {
    if (sale.scanKey(ev.key)) ev.preventDefault();
    else if (input.value === "" && (ev.key === "+" || ev.key === "-")) {
      ev.preventDefault(); // a scanner never types these; a cashier's quick correction
      sale.bumpLast(ev.key === "+" ? 1 : -1);
    }
  });
}

function wire() {
  wireScan();
  $("tendered").addEventListener("input", sale.onTendered);
  $("tendered").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") sale.pay("cash");
  });
  $("pay-cash").addEventListener("click", () => sale.pay("cash"));
  $("pay-card").addEventListener("click", () => sale.pay("card"));
  $("new-sale").addEventListener("click", sale.newSale);
  $("print").addEventListener("click", () => window.print());
  $("pair-form").addEventListener("submit", pair);
  $("find-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    findReceipt($("find-receipt").value.trim());
  });
  $("refund").addEventListener("click", refund);
  $("void").addEventListener("click", voidSale);
  $("shift-open-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    openShift();
  });
  $("shift-close-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    closeShift();
  });
  for (const view of Object.keys(VIEWS)) $(`tab-${view}`).addEventListener("click", () => show(view));
  document.addEventListener("keydown", onKey);
}

async function init() {
  whenUnauthorised(showPairing);
  wire();
  sale.render();
  onSettled(settled);
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/sw.js").catch(() => {}); // needs localhost or HTTPS
  }
  await Promise.all([loadShop(), loadCatalog(), pollStatus(), loadShift()]);
  await renderQueue();
  startDraining();
  drain();
  setInterval(pollStatus, POLL_MS);
  setInterval(() => {
    loadCatalog();
    renderQueue(); // ages move on
  }, CATALOG_MS);
  setInterval(renderQueue, POLL_MS);
}

init();
