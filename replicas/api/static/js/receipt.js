// The receipt: what was sold, the tax in it, how it was paid. Printable (see till.css's
// print rules). A receipt of a queued sale says plainly that it is not a sale yet.

import { api } from "./api.js";
import { lookup } from "./catalog.js";
import { fmt, percent } from "./money.js";
import { $, cell } from "./ui.js";

let shop = { store_name: "", replica_id: "", tax_mode: "inclusive" };

export function setShop(details) {
  shop = details;
}

// A sale as the till returns it (GET /sales/{id}) in the receipt's own shape.
export function fromSaleView(sale, at) {
  return {
    receipt: sale.receipt,
    saleId: sale.id,
    at,
    taxMode: sale.tax_mode,
    total: sale.total,
    change: sale.change,
    payments: sale.payments,
    delivery: sale.delivery,
    lines: sale.lines.map((ln) => ({
      sku: ln.sku,
      name: lookup(ln.sku)?.name || ln.sku,
      qty: ln.qty,
      unitPrice: ln.unit_price,
      discount: ln.discount,
      tax: ln.tax,
      rateBp: ln.tax_rate_bp,
    })),
  };
}

function lineRow(ln, exclusive) {
  const tr = document.createElement("tr");
  const total = ln.qty * ln.unitPrice - ln.discount + (exclusive ? ln.tax : 0);
  const what = `${ln.qty} × ${fmt(ln.unitPrice)}${ln.discount ? ` − ${fmt(ln.discount)}` : ""}`;
  tr.append(cell(ln.name), cell(what), cell(fmt(total), "num"));
  return tr;
}

function taxRows(r) {
  const byRate = new Map();
  for (const ln of r.lines) byRate.set(ln.rateBp, (byRate.get(ln.rateBp) || 0) + ln.tax);
  const how = r.taxMode === "exclusive" ? "added" : "included";
  return [...byRate]
    .sort((a, b) => a[0] - b[0])
    .map(([rate, tax]) => {
      const tr = document.createElement("tr");
      tr.className = "tax-line";
      tr.append(cell(`Tax ${percent(rate)} (${how})`), cell(""), cell(fmt(tax), "num"));
      return tr;
    });
}

export function paymentText(p) {
  return p.method === "card" ? `card ****${p.last4 || p.card_last4}${p.auth ? ` (${p.auth})` : ""}` : p.method;
}

export function showReceipt(r) {
  $("receipt-store").textContent = shop.store_name || shop.store || "";
  $("receipt-till").textContent = shop.replica_id;
  $("receipt-no").textContent = r.receipt;
  $("receipt-sale-id").textContent = r.saleId || "—";
  $("receipt-at").textContent = new Date(r.at).toLocaleString();
  const exclusive = r.taxMode === "exclusive";
  $("receipt-lines").replaceChildren(...r.lines.map((ln) => lineRow(ln, exclusive)));
  $("receipt-tax").replaceChildren(...(r.taxMode ? taxRows(r) : []));
  const paid = r.payments.reduce((sum, p) => sum + p.amount, 0);
  $("receipt-total").textContent = fmt(r.total);
  $("receipt-paid").textContent = fmt(paid);
  $("receipt-change").textContent = fmt(r.change);
  $("receipt-payment").textContent = r.payments.map(paymentText).join(", ");
  markQueued(r.queued ? "queued" : "sold");
  $("sale-view").hidden = true;
  $("receipt").hidden = false;
  $("new-sale").focus();
  showDelivery(r);
}

// "Is this sale safe at HQ yet?": who holds it, refreshed while its receipt is shown.
const DELIVERY_POLL_MS = 2000;

function deliveryText(delivery) {
  if (!delivery) return "";
  const others = delivery.held_by.filter((r) => r !== shop.replica_id);
  const where = others.length ? `also held by ${others.join(", ")}` : "held by this till only";
  return delivery.at_hq ? `safe at HQ (${where})` : `not yet at HQ (${where})`;
}

async function showDelivery(r) {
  $("receipt-delivery").textContent = deliveryText(r.delivery);
  let delivery = r.delivery;
  while (r.saleId && !delivery?.at_hq && shownReceipt() === r.receipt) {
    await new Promise((resolve) => setTimeout(resolve, DELIVERY_POLL_MS));
    if (shownReceipt() !== r.receipt) return;
    try {
      delivery = (await api("GET", `/sales/${r.saleId}`)).delivery;
    } catch {
      continue; // the till is busy or restarting: try again on the next turn
    }
    $("receipt-delivery").textContent = deliveryText(delivery);
  }
}

// "queued": kept on this page only; "sold": durable in the till's log; or a refusal.
export function markQueued(state, why = "") {
  const banner = $("receipt-queued");
  banner.hidden = state === "sold";
  banner.textContent =
    state === "queued"
      ? "QUEUED — not a sale yet: the till has not acknowledged it. It is sent when the till answers."
      : `REFUSED by the till: ${why}. Not a sale; a manager must see to it.`;
  banner.className = `banner ${state}`;
}

export function shownReceipt() {
  return $("receipt").hidden ? null : $("receipt-no").textContent;
}
