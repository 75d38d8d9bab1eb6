// The catalog as the page last read it from the till, kept in the browser so scans and
// searches answer at once, and still answer while the till's server is unreachable.

import { api } from "./api.js";
import { kv } from "./db.js";

let products = []; // [{sku, name, price, tax_rate_bp, active}]
let bySku = new Map(); // upper-cased SKU -> product

function keep(list) {
  products = list;
  bySku = new Map(list.map((p) => [p.sku.toUpperCase(), p]));
}

// From the till when it answers, else from the browser's copy. Returns where it came from.
export async function loadCatalog() {
  try {
    const list = await api("GET", "/catalog");
    keep(list);
    await kv.put("catalog", { list, at: Date.now() });
    return "till";
  } catch {
    const cached = await kv.get("catalog");
    if (cached) keep(cached.list);
    return cached ? "cache" : "none";
  }
}

// A scanned or typed code: SKUs are matched without regard to case (a scanner, a caps
// lock); a code only the case tells apart from another is taken as typed.
export function lookup(code) {
  const exact = products.find((p) => p.sku === code);
  return exact || bySku.get(code.toUpperCase()) || null;
}

// Active products whose name or SKU holds every word of `text`, best first.
export function search(text, limit = 8) {
  const words = text.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return [];
  const scored = [];
  for (const p of products) {
    if (!p.active) continue;
    const hay = `${p.name} ${p.sku}`.toLowerCase();
    if (!words.every((w) => hay.includes(w))) continue;
    const starts = p.name.toLowerCase().startsWith(words[0]) ? 0 : 1;
    scored.push([starts, p.name, p]);
  }
  scored.sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1]));
  return scored.slice(0, limit).map((s) => s[2]);
}

export function catalogSize() {
  return products.length;
}
