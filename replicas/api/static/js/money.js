// Money is integer minor units everywhere; it is only formatted (and parsed) at the edge.
// Tax is computed exactly as the till does (replicas/api/tax.py), so the total the page
// asks for is the total the till stores: per line, half up, in integers (BigInt, no float).

export function fmt(minor) {
  const sign = minor < 0 ? "-" : "";
  const abs = Math.abs(minor);
  return `${sign}${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

// "12", "12.5", "12.50" -> 1250; null if not a plain amount (no floats involved).
export function parseMoney(text) {
  const m = /^\s*(\d{1,10})(?:[.,](\d{1,2}))?\s*$/.exec(text);
  if (!m) return null;
  return Number(m[1]) * 100 + Number((m[2] || "0").padEnd(2, "0"));
}

// round(whole * part / of), halves up.
export function share(whole, part, of) {
  if (!of) return 0;
  const [w, p, o] = [BigInt(whole), BigInt(part), BigInt(of)];
  return Number((2n * w * p + o) / (2n * o));
}

export function lineTax(value, rateBp, mode) {
  return share(value, rateBp, mode === "inclusive" ? 10000 + rateBp : 10000);
}

export function percent(rateBp) {
  return `${(rateBp / 100).toString()}%`;
}

// What a list of lines ({qty, unitPrice, discount, rateBp}) comes to under `mode`.
export function totals(lines, mode) {
  let value = 0;
  let tax = 0;
  const byRate = new Map(); // rate -> tax
  for (const ln of lines) {
    const v = ln.qty * ln.unitPrice - ln.discount;
    const t = lineTax(v, ln.rateBp, mode);
    value += v;
    tax += t;
    if (ln.rateBp) byRate.set(ln.rateBp, (byRate.get(ln.rateBp) || 0) + t);
  }
  const total = mode === "exclusive" ? value + tax : value;
  return { value, tax, total, byRate };
}
