// Refunds and voids of a receipt found by its number (typed or scanned). The till decides
// who may do what: a refund, or a void of an older sale or another cashier's, needs a
// manager, whose approval the page asks for when the till says so.

import { api } from "./api.js";
import { lookup } from "./catalog.js";
import { fmt } from "./money.js";
import { $, cell, say, withApproval } from "./ui.js";

let sale = null; // the SaleView found

const tell = (text, ok = false) => say(text, ok, "returns-message");

export async function findReceipt(receipt) {
  sale = null;
  $("returns-sale").hidden = true;
  if (!receipt) return;
  try {
    const found = await api("GET", `/receipts/${encodeURIComponent(receipt)}`);
    sale = found.sales[0];
    if (found.sales.length > 1) tell(`receipt ${receipt} names ${found.sales.length} sales: showing the first`);
    else tell("");
    showSale();
  } catch (err) {
    tell(err.status === 404 ? `no sale with receipt ${receipt} on this till` : err.message);
  }
}

function lineRow(ln) {
  const tr = document.createElement("tr");
  const qty = document.createElement("input");
  qty.type = "number";
  qty.min = "0";
  qty.max = String(ln.qty);
  qty.value = "0";
  qty.className = "refund-qty";
  qty.dataset.line = String(ln.line);
  qty.ariaLabel = `quantity of ${lookup(ln.sku)?.name || ln.sku} to refund`;
  const pick = document.createElement("td");
  pick.append(qty);
  const name = lookup(ln.sku)?.name || ln.sku;
  tr.append(cell(name), cell(`${ln.qty} × ${fmt(ln.unit_price)}`), cell(fmt(ln.tax), "num"), pick);
  return tr;
}

function showSale() {
  $("returns-sale").hidden = false;
  $("returns-receipt").textContent = sale.receipt;
  const state = sale.voided ? "voided" : sale.refunded ? `${fmt(sale.refunded)} refunded so far` : "";
  $("returns-state").textContent = `total ${fmt(sale.total)}${state ? `, ${state}` : ""}`;
  $("returns-lines").replaceChildren(...sale.lines.map(lineRow));
  $("refund").disabled = $("void").disabled = sale.voided;
  const first = document.querySelector(".refund-qty");
  if (first) first.focus();
}

async function reload() {
  const found = await api("GET", `/sales/${sale.id}`);
  sale = found;
  showSale();
}

export async function refund() {
  const lines = [...document.querySelectorAll(".refund-qty")]
    .map((el) => ({ line: Number(el.dataset.line), qty: Number(el.value) }))
    .filter((l) => l.qty > 0);
  if (!lines.length) {
    tell("enter how many of a line to refund");
    return;
  }
  const reason = $("returns-reason").value.trim();
  try {
    const body = { lines, ...(reason ? { reason } : {}) };
    const out = await withApproval((token) => api("POST", `/sales/${sale.id}/refunds`, body, { token }));
    tell(`refunded ${fmt(out.amount)} (tax ${fmt(out.tax)} of it)`, true);
    await reload();
  } catch (err) {
    tell(`refund not made: ${err.message}`);
  }
}

export async function voidSale() {
  const reason = $("returns-reason").value.trim();
  try {
    const body = reason ? { reason } : {};
    await withApproval((token) => api("POST", `/sales/${sale.id}/void`, body, { token }));
    tell(`sale ${sale.receipt} voided`, true);
    await reload();
  } catch (err) {
    tell(`void not made: ${err.message}`);
  }
}
