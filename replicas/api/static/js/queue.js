// Sales rung while the till's server did not answer, kept in the browser (IndexedDB)
// and sent, oldest first, when it answers again. Each carries its receipt as the
// idempotency key: a sale the till did get before the answer was lost is answered with
// that sale again (200), never sold twice. A queued sale is not a sale until then.

import { api, unreachable } from "./api.js";
import { queue } from "./db.js";
import { fmt } from "./money.js";
import { $ } from "./ui.js";

const DRAIN_MS = 2000;
let listeners = [];
let draining = false;

export function onSettled(listener) {
  listeners.push(listener);
}

export async function enqueue(receipt, sale, shown) {
  await queue.put({ receipt, sale, shown, queuedAt: Date.now() });
  await render();
}

// Send what is queued, oldest first; stop at the first the till does not answer.
export async function drain() {
  if (draining) return;
  draining = true;
  try {
    for (const entry of await queue.all()) {
      if (entry.refused) continue;
      let outcome;
      try {
        const out = await api("POST", "/sales", entry.sale);
        await queue.remove(entry.receipt);
        outcome = { receipt: entry.receipt, sold: out };
      } catch (err) {
        if (unreachable(err)) break; // still down: try again on the next turn
        await queue.put({ ...entry, refused: err.message });
        outcome = { receipt: entry.receipt, refused: err.message };
      }
      for (const listener of listeners) listener(outcome);
    }
  } finally {
    draining = false;
    await render();
  }
}

function age(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 120 ? `${s} s` : `${Math.round(s / 60)} min`;
}

export async function render() {
  const entries = await queue.all();
  const waiting = entries.filter((e) => !e.refused);
  const refused = entries.filter((e) => e.refused);
  const el = $("queue-state");
  if (!entries.length) {
    el.textContent = "";
    el.className = "queue";
  } else {
    const oldest = waiting.length ? `, oldest ${age(Date.now() - waiting[0].queuedAt)}` : "";
    const parts = [];
    if (waiting.length) parts.push(`${waiting.length} queued${oldest} — not yet sales`);
    if (refused.length) parts.push(`${refused.length} refused by the till`);
    el.textContent = parts.join("; ");
    el.className = `queue ${refused.length ? "refused" : "pending"}`;
  }
  $("queue-list").replaceChildren(
    ...entries.map((e) => {
      const li = document.createElement("li");
      const total = e.sale.payments.reduce((sum, p) => sum + p.amount, 0);
      li.textContent = `${e.receipt}: ${fmt(total)}, ${
        e.refused ? `refused: ${e.refused}` : `queued ${age(Date.now() - e.queuedAt)} ago`
      }`;
      return li;
    }),
  );
}

export function startDraining() {
  render();
  setInterval(() => {
    drain();
  }, DRAIN_MS);
}
