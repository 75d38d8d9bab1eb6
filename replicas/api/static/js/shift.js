// The cashier's shift: opened with a float, closed with the cash counted; the till works
// out what the drawer should hold and the over/short. The open shift is the till's
// (GET /shift), so a reloaded page, or another browser on this till, sees the same one.

import { api } from "./api.js";
import { fmt, parseMoney } from "./money.js";
import { $, say, withApproval } from "./ui.js";

let current = null; // the ShiftView of this till's open shift, or the one just closed

const tell = (text, ok = false) => say(text, ok, "shift-message");

export async function loadShift() {
  $("shift-figures").replaceChildren(); // never show the last figures as today's
  try {
    current = await api("GET", "/shift");
  } catch (err) {
    if (err.status !== 404) {
      tell(`the till did not answer (${err.message}): figures not shown`);
      return;
    }
    current = current && current.closed_by !== null ? current : null;
  }
  showShift();
}

function figure(label, value, id) {
  const dt = document.createElement("dt");
  dt.textContent = label;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (id) dd.id = id;
  return [dt, dd];
}

function showShift() {
  const open = current && current.closed_by === null;
  $("shift-open-form").hidden = open;
  $("shift-close-form").hidden = !open;
  $("shift-state").textContent = open ? `shift ${current.shift}` : "no shift open";
  if (!current) {
    $("shift-figures").replaceChildren();
    return;
  }
  const f = current;
  $("shift-figures").replaceChildren(
    ...figure("Shift", f.shift),
    ...figure("Sales", String(f.sales), "shift-sales"),
    ...figure("Net takings", fmt(f.net), "shift-net"),
    ...figure("Tax", fmt(f.tax), "shift-tax"),
    ...figure("Float", fmt(f.float)),
    ...figure("Expected cash", fmt(f.expected_cash), "shift-expected"),
    ...(f.counted_cash === null ? [] : figure("Counted cash", fmt(f.counted_cash), "shift-counted")),
    ...(f.over_short === null ? [] : figure("Over/short", fmt(f.over_short), "shift-over-short")),
  );
}

export async function openShift() {
  const float = parseMoney($("shift-float").value);
  if (float === null) {
    tell("float: enter the cash in the drawer, like 100.00");
    return;
  }
  try {
    current = await api("POST", "/shifts", { float_amount: float });
    tell(`shift ${current.shift} open`, true);
    showShift();
  } catch (err) {
    tell(`shift not opened: ${err.message}`);
  }
}

export async function closeShift() {
  const counted = parseMoney($("shift-counted-cash").value);
  if (counted === null) {
    tell("counted cash: enter what the drawer holds, like 412.30");
    return;
  }
  try {
    const path = `/shifts/${encodeURIComponent(current.shift)}/close`;
    current = await withApproval((token) => api("POST", path, { counted_cash: counted }, { token }));
    tell(`shift closed: over/short ${fmt(current.over_short)}`, true);
    showShift();
  } catch (err) {
    tell(`shift not closed: ${err.message}`);
  }
}
