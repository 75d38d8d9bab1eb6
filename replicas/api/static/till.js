// The till page: basket, payment and receipt over the till's own HTTP API.
// Plain JS, no build step and no outside resources, so it works with the network cut.
// Money is integer minor units everywhere; it is only formatted (and parsed) at the edge.
"use strict";

const POLL_MS = 2000;
const STATUS_TIMEOUT_MS = 1500; // a hung till must show as unreachable, not "online"
const SALE_TIMEOUT_MS = 10000; // a durable sale takes milliseconds; past this, retry
const basket = []; // [{sku, name, unitPrice, qty}] in scan order
let scans = Promise.resolve();
// One receipt per basket, sent with the sale: if the answer is lost (Wi-Fi, timeout) and
// Pay is pressed again, the till answers with the sale it already made, not a second one.
let saleReceipt = newReceipt();

const $ = (id) => document.getElementById(id);

// --- money ---------------------------------------------------------------------------

function fmt(minor) {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

// "12", "12.5", "12.50" -> 1250; null if not a plain amount (no floats involved).
function parseMoney(text) {
  const m = /^\s*(\d{1,10})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

// --- HTTP ----------------------------------------------------------------------------

// The page's API token, from the pairing step (none needed on an open demo till).
const TOKEN_KEY = "tillmesh-token";

async function api(method, path, body, timeoutMs = SALE_TIMEOUT_MS) {
  const init = { method, headers: { Accept: "application/json" } };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) init.headers.Authorization = `Bearer ${token}`;
  init.signal = AbortSignal.timeout(timeoutMs);
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) showPairing();
  if (!res.ok) {
    const err = new Error(describe(data, res.status));
    err.status = res.status;
    throw err;
  }
  return data;
}

// "P-<time>-<random>", letters between the digits: never the form the till generates,
// never a long digit run (which the till would take for a card number).
function newReceipt() {
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `P-${Date.now().toString(36)}-${random}`.toUpperCase();
}

// FastAPI errors: a string, or a list of {loc, msg} for field errors.
function describe(data, status) {
  const d = data && data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  }
  return `request failed (${status})`;
}

function say(text, ok = false) {
  const el = $("message");
  el.textContent = text;
  el.className = ok ? "ok" : "";
}

// --- basket ----------------------------------------------------------------------------

function total() {
  return basket.reduce((sum, it) => sum + it.qty * it.unitPrice, 0);
}

async function addSku(sku) {
  const found = basket.find((it) => it.sku === sku);
  if (found) {
    found.qty += 1;
  } else {
    let product;
    try {
      product = await api("GET", `/catalog/${encodeURIComponent(sku)}`);
    } catch (err) {
      say(`${sku}: ${err.message}`);
      return;
    }
    if (!product.active) {
      say(`${sku} is not for sale (inactive)`);
      return;
    }
    // The price shown is the price charged: it is sent with the sale.
    basket.push({ sku, name: product.name, unitPrice: product.price, qty: 1 });
  }
  say("");
  render();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function button(label, cls, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function changeQty(item, delta) {
  item.qty += delta;
  if (item.qty <= 0) basket.splice(basket.indexOf(item), 1);
  render();
}

function basketRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.sku = item.sku;
  tr.append(cell(item.sku), cell(item.name), cell(String(item.qty), "num qty"));
  tr.append(cell(fmt(item.unitPrice), "num"), cell(fmt(item.qty * item.unitPrice), "num line-total"));
  const actions = document.createElement("td");
  actions.append(
    button("−", "small", () => changeQty(item, -1)),
    button("+", "small", () => changeQty(item, +1)),
    button("×", "small remove", () => changeQty(item, -item.qty)),
  );
  tr.append(actions);
  return tr;
}

function render() {
  $("basket").tBodies[0].replaceChildren(...basket.map(basketRow));
  $("total").textContent = fmt(total());
  $("pay-cash").disabled = basket.length === 0;
  $("pay-card").disabled = basket.length === 0;
}

// --- payment -------------------------------------------------------------------------

// No unit price: the till prices each line from its catalog at the sale, so a cashier's
// token sells (a price sent that differs from the catalog's is a manager's override).
function saleLines() {
  return basket.map((it) => ({ sku: it.sku, qty: it.qty }));
}

function cashPayment() {
  const text = $("tendered").value.trim();
  const amount = text === "" ? total() : parseMoney(text);
  if (amount === null) throw new Error("tendered: enter an amount like 12.50");
  if (amount < total()) throw new Error(`tendered ${fmt(amount)} is less than ${fmt(total())}`);
  return { method: "cash", amount };
}

function cardPayment() {
  const token = $("card-token").value.trim();
  const last4 = $("card-last4").value.trim();
  if (!token || !/^\d{4}$/.test(last4)) throw new Error("card: token and last 4 digits needed");
  return { method: "card", amount: total(), card_token: token, card_last4: last4 };
}

async function pay(makePayment) {
  let payment;
  try {
    payment = makePayment();
  } catch (err) {
    say(err.message);
    return;
  }
  $("pay-cash").disabled = $("pay-card").disabled = true;
  const sale = { lines: saleLines(), payments: [payment], receipt: saleReceipt };
  try {
    // The till answers only once the sale is durable in its own log.
    const out = await api("POST", "/sales", sale);
    showReceipt(await api("GET", `/sales/${out.sale_id}`), out.at);
  } catch (err) {
    if (err.status === 409 && /already used/.test(err.message)) {
      await showPaidBasket(); // paid before, with another tender: show that sale
      return;
    }
    const known = err.status !== undefined; // the till answered: nothing was sold
    say(known ? `payment not recorded: ${err.message}`
              : `payment not confirmed (${err.message}): press Pay again, it will not charge twice`);
    render();
  }
}

async function showPaidBasket() {
  const found = await api("GET", `/receipts/${encodeURIComponent(saleReceipt)}`);
  const [sale] = found.sales;
  showReceipt(sale, Math.floor(sale.hlc / 65536)); // HLC = wall ms << 16 | counter
  say("this basket was already paid: its receipt", true);
}

// --- receipt ---------------------------------------------------------------------------

function showReceipt(sale, at) {
  $("receipt-no").textContent = sale.receipt;
  $("receipt-sale-id").textContent = sale.id;
  $("receipt-at").textContent = new Date(at).toLocaleString();
  $("receipt-lines").replaceChildren(
    ...sale.lines.map((ln) => {
      const tr = document.createElement("tr");
      const total = ln.qty * ln.unit_price - ln.discount;
      tr.append(cell(ln.sku), cell(`${ln.qty} × ${fmt(ln.unit_price)}`), cell(fmt(total), "num"));
      return tr;
    }),
  );
  const paid = sale.payments.reduce((sum, p) => sum + p.amount, 0);
  $("receipt-total").textContent = fmt(sale.total);
  $("receipt-paid").textContent = fmt(paid);
  $("receipt-change").textContent = fmt(sale.change);
  $("receipt-payment").textContent = sale.payments
    .map((p) => (p.method === "card" ? `card ****${p.last4} (${p.auth})` : p.method))
    .join(", ");
  $("sale-view").hidden = true;
  $("receipt").hidden = false;
  $("new-sale").focus();
  showDelivery(sale);
}

// "Is this sale safe at HQ yet?": who holds it, refreshed while its receipt is shown.
const DELIVERY_POLL_MS = 2000;

function deliveryText(delivery) {
  if (!delivery) return "";
  const others = delivery.held_by.filter((r) => r !== $("replica-id").textContent);
  const where = others.length ? `also held by ${others.join(", ")}` : "held by this till only";
  return delivery.at_hq ? `safe at HQ (${where})` : `not yet at HQ (${where})`;
}

async function showDelivery(sale) {
  $("receipt-delivery").textContent = deliveryText(sale.delivery);
  let current = sale;
  while (!current.delivery?.at_hq && !$("receipt").hidden) {
    await new Promise((resolve) => setTimeout(resolve, DELIVERY_POLL_MS));
    if ($("receipt").hidden || $("receipt-sale-id").textContent !== sale.id) return;
    try {
      current = await api("GET", `/sales/${sale.id}`);
    } catch {
      continue; // the till is busy or restarting: try again on the next turn
    }
    $("receipt-delivery").textContent = deliveryText(current.delivery);
  }
}

function newSale() {
  basket.length = 0;
  saleReceipt = newReceipt();
  for (const id of ["tendered", "card-token", "card-last4", "sku"]) $(id).value = "";
  $("receipt").hidden = true;
  $("sale-view").hidden = false;
  say("");
  render();
  $("sku").focus();
}

// --- status header ------------------------------------------------------------------

async function pollStatus() {
  const badge = $("net-state");
  try {
    const s = await api("GET", "/status?digest=false&conflicts=false", undefined, STATUS_TIMEOUT_MS);
    $("replica-id").textContent = s.replica_id;
    badge.textContent = s.online ? "online" : "offline";
    badge.className = `badge ${s.online ? "online" : "offline"}`;
    const n = s.unsynced_to_hq;
    // Every own event counts (sales, refunds, stock moves), not only sales.
    $("unsynced").textContent = `${n} ${n === 1 ? "event" : "events"} not yet at HQ`;
    $("unsynced").className = n > 0 ? "unsynced pending" : "unsynced";
  } catch (err) {
    badge.textContent = "till service unreachable";
    badge.className = "badge down";
  }
}

// --- pairing -------------------------------------------------------------------------

function showPairing() {
  $("pair-form").hidden = false;
  $("pair-token").focus();
}

function pair(ev) {
  ev.preventDefault();
  const token = $("pair-token").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  $("pair-token").value = "";
  $("pair-form").hidden = true;
  pollStatus(); // a wrong token asks again
  $("sku").focus();
}

// --- wiring --------------------------------------------------------------------------

function init() {
  $("scan-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const sku = $("sku").value.trim();
    $("sku").value = "";
    // Scans queue up: a second scan of a SKU whose lookup is still running must add
    // to its row, not race it into a duplicate one.
    if (sku) scans = scans.then(() => addSku(sku));
  });
  $("pay-cash").addEventListener("click", () => pay(cashPayment));
  $("pay-card").addEventListener("click", () => pay(cardPayment));
  $("new-sale").addEventListener("click", newSale);
  $("pair-form").addEventListener("submit", pair);
  render();
  pollStatus();
  setInterval(pollStatus, POLL_MS);
}

init();
