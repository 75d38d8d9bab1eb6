// The basket and its payment. Prices, names and tax rates come from the catalog the page
// holds (catalog.js); the till prices and taxes the sale again when it records it, by the
// same rules (money.js), so the total shown is the total stored.

import { api, unreachable } from "./api.js";
import { lookup, search } from "./catalog.js";
import { fmt, parseMoney, percent, totals } from "./money.js";
import { enqueue } from "./queue.js";
import { fromSaleView, showReceipt } from "./receipt.js";
import { $, button, cell, say, withApproval } from "./ui.js";

const basket = []; // [{sku, name, unitPrice, qty, discount, rateBp}] in scan order
let taxMode = "inclusive";
let results = []; // the search results shown under the scan field
let picked = -1; // the one the arrow keys are on
// One receipt per basket, sent with the sale: if the answer is lost (Wi-Fi, timeout, a
// restarting till) the sale is queued with it and the till records it once.
let saleReceipt = newReceipt();

export function setTaxMode(mode) {
  taxMode = mode;
  render();
}

// "P-<time>-<random>", letters between the digits: never the form the till generates,
// never a long digit run (which the till would take for a card number).
function newReceipt() {
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `P-${Date.now().toString(36)}-${random}`.toUpperCase();
}

// --- basket ------------------------------------------------------------------------

export function addProduct(p) {
  if (!p.active) {
    say(`${p.name} (${p.sku}) is not for sale: withdrawn from the catalog`);
    return;
  }
  const found = basket.find((it) => it.sku === p.sku);
  if (found) found.qty += 1;
  else basket.push({ sku: p.sku, name: p.name, unitPrice: p.price, qty: 1, discount: 0, rateBp: p.tax_rate_bp });
  say("");
  render();
}

function changeQty(item, delta) {
  item.qty += delta;
  if (item.qty <= 0) basket.splice(basket.indexOf(item), 1);
  else item.discount = Math.min(item.discount, item.qty * item.unitPrice);
  render();
}

// "10%" of the line, or an amount ("0.50"); the till refuses what is beyond a cashier's
// limit unless a manager approves it at payment.
function setDiscount(item, text) {
  const value = item.qty * item.unitPrice;
  const pct = /^\s*(\d{1,3})\s*%\s*$/.exec(text);
  const amount = pct ? Math.floor((value * Number(pct[1])) / 100) : text.trim() ? parseMoney(text) : 0;
  if (amount === null || amount > value) {
    say(`discount: enter an amount up to ${fmt(value)} or a percentage like 10%`);
  } else {
    item.discount = amount;
    say("");
  }
  render();
}

function discountInput(item) {
  const input = document.createElement("input");
  input.className = "discount";
  input.value = item.discount ? fmt(item.discount) : "";
  input.placeholder = "0";
  input.ariaLabel = `discount on ${item.name}`;
  input.addEventListener("change", () => setDiscount(item, input.value));
  return input;
}

function basketRow(item) {
  const tr = document.createElement("tr");
  tr.dataset.sku = item.sku;
  const value = item.qty * item.unitPrice - item.discount;
  const disc = document.createElement("td");
  disc.append(discountInput(item));
  tr.append(cell(item.name, "name"), cell(item.sku, "sku"), cell(String(item.qty), "num qty"));
  tr.append(cell(fmt(item.unitPrice), "num"), disc, cell(fmt(value), "num line-total"));
  const actions = document.createElement("td");
  actions.append(
    button("−", "small", () => changeQty(item, -1), `one ${item.name} less`),
    button("+", "small", () => changeQty(item, +1), `one ${item.name} more`),
    button("×", "small remove", () => changeQty(item, -item.qty), `remove ${item.name}`),
  );
  tr.append(actions);
  return tr;
}

function taxRow(rate, tax) {
  const tr = document.createElement("tr");
  tr.className = "tax-line";
  const how = taxMode === "exclusive" ? "added" : "included";
  tr.append(cell(`Tax ${percent(rate)} (${how})`), cell(fmt(tax), "num"));
  tr.firstChild.colSpan = 5;
  tr.append(cell(""));
  return tr;
}

export function render() {
  const t = totals(basket, taxMode);
  $("basket-lines").replaceChildren(...basket.map(basketRow));
  $("basket-tax").replaceChildren(...[...t.byRate].sort((a, b) => a[0] - b[0]).map(([r, x]) => taxRow(r, x)));
  $("subtotal").textContent = fmt(t.value);
  $("total").textContent = fmt(t.total);
  $("pay-cash").disabled = $("pay-card").disabled = basket.length === 0;
  showChange();
}

function showChange() {
  const tendered = parseMoney($("tendered").value);
  const due = totals(basket, taxMode).total;
  $("change-due").textContent = tendered !== null && tendered >= due && basket.length ? `change ${fmt(tendered - due)}` : "";
}

// --- scan and search -----------------------------------------------------------------

// Enter in the scan field: the picked search result, else an exact code (a scan),
// else the only search result; "*3" sets the last line's quantity to 3.
export function scanEntered(text) {
  const qty = /^\*(\d{1,4})$/.exec(text);
  if (qty && basket.length) {
    const last = basket[basket.length - 1];
    changeQty(last, Number(qty[1]) - last.qty);
    return;
  }
  const chosen = (picked >= 0 && results[picked]) || lookup(text) || (results.length === 1 ? results[0] : null);
  showResults([]);
  if (chosen) addProduct(chosen);
  else if (text) askTill(text);
}

// A code the page's copy of the catalog lacks (not loaded yet, or added at HQ since):
// the till's own catalog decides.
async function askTill(code) {
  try {
    addProduct(await api("GET", `/catalog/${encodeURIComponent(code)}`));
  } catch (err) {
    say(err.status === 404 || err.status === 422 ? `${code}: no product with that code or name` : `${code}: ${err.message}`);
  }
}

export function scanTyped(text) {
  showResults(text.length >= 2 && !lookup(text) ? search(text) : []);
}

// Arrow keys move through the results; returns whether it used the key.
export function scanKey(key) {
  if (!results.length || (key !== "ArrowDown" && key !== "ArrowUp")) return false;
  picked = (picked + (key === "ArrowDown" ? 1 : results.length - 1)) % results.length;
  showResults(results, picked);
  return true;
}

export function showResults(list, at = -1) {
  results = list;
  picked = at;
  const ul = $("results");
  ul.replaceChildren(
    ...list.map((p, i) => {
      const li = document.createElement("li");
      li.role = "option";
      li.id = `result-${i}`;
      li.ariaSelected = String(i === at);
      li.textContent = `${p.name} — ${fmt(p.price)} (${p.sku})`;
      li.addEventListener("mousedown", (ev) => {
        ev.preventDefault(); // keep the scan field focused
        showResults([]);
        $("sku").value = "";
        addProduct(p);
      });
      return li;
    }),
  );
  ul.hidden = list.length === 0;
  $("sku").setAttribute("aria-expanded", String(list.length > 0));
  if (at >= 0) $("sku").setAttribute("aria-activedescendant", `result-${at}`);
  else $("sku").removeAttribute("aria-activedescendant");
}

export function bumpLast(delta) {
  if (basket.length) changeQty(basket[basket.length - 1], delta);
}

// --- payment -------------------------------------------------------------------------

function cashPayment() {
  const due = totals(basket, taxMode).total;
  const text = $("tendered").value.trim();
  const amount = text === "" ? due : parseMoney(text);
  if (amount === null) throw new Error("tendered: enter an amount like 12.50");
  if (amount < due) throw new Error(`tendered ${fmt(amount)} is less than ${fmt(due)}`);
  return { method: "cash", amount };
}

function cardPayment() {
  const token = $("card-token").value.trim();
  const last4 = $("card-last4").value.trim();
  if (!token || !/^\d{4}$/.test(last4)) throw new Error("card: token and last 4 digits needed");
  return { method: "card", amount: totals(basket, taxMode).total, card_token: token, card_last4: last4 };
}

// Lines without a unit price: the till prices them from its catalog (a price sent that
// differs from the catalog's is a manager's override). A queued sale carries the prices
// the customer saw, so a price changed meanwhile is the till's to refuse, not to apply.
function saleLines(priced) {
  return basket.map((it) => ({
    sku: it.sku,
    qty: it.qty,
    ...(it.discount ? { discount: it.discount } : {}),
    ...(priced ? { unit_price: it.unitPrice } : {}),
  }));
}

export async function pay(kind) {
  let payment;
  try {
    payment = kind === "card" ? cardPayment() : cashPayment();
  } catch (err) {
    say(err.message);
    return;
  }
  $("pay-cash").disabled = $("pay-card").disabled = true;
  const sale = { lines: saleLines(false), payments: [payment], receipt: saleReceipt };
  try {
    // The till answers only once the sale is durable in its own log.
    const out = await withApproval((token) => api("POST", "/sales", sale, { token }));
    showReceipt(fromSaleView(await api("GET", `/sales/${out.sale_id}`), Date.parse(out.at)));
  } catch (err) {
    if (unreachable(err)) {
      await queueSale(sale, payment);
      return;
    }
    say(`payment not recorded: ${err.message}`);
    render();
  }
}

// The till did not answer: keep the sale in the browser and show its receipt as queued.
async function queueSale(sale, payment) {
  const t = totals(basket, taxMode);
  const change = payment.method === "cash" ? payment.amount - t.total : 0;
  const lines = basket.map((it) => {
    const value = it.qty * it.unitPrice - it.discount;
    return { ...it, tax: totals([it], taxMode).tax, value };
  });
  const shown = { receipt: saleReceipt, at: Date.now(), taxMode, total: t.total, change, payments: [payment], lines };
  await enqueue(saleReceipt, { ...sale, lines: saleLines(true) }, shown);
  showReceipt({ ...shown, queued: true, payments: [{ ...payment, last4: payment.card_last4 }] });
}

export function newSale() {
  basket.length = 0;
  saleReceipt = newReceipt();
  for (const id of ["tendered", "card-token", "card-last4", "sku"]) $(id).value = "";
  showResults([]);
  $("receipt").hidden = true;
  $("sale-view").hidden = false;
  say("");
  render();
  $("sku").focus();
}

export function onTendered() {
  showChange();
}
