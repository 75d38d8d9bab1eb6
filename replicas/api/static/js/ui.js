// Small DOM helpers shared by the page's parts, and the manager's approval step.

import { needsManager } from "./api.js";

export const $ = (id) => document.getElementById(id);

export function say(text, ok = false, where = "message") {
  const el = $(where);
  el.textContent = text;
  el.className = ok ? "ok" : "";
}

export function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

export function button(label, cls, onClick, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = cls;
  if (title) b.title = b.ariaLabel = title;
  b.addEventListener("click", onClick);
  return b;
}

// The manager scans their badge (it holds their API token) or types it; resolves with
// the token, or null if they cancel. The token is used for the one request and forgotten.
function askManager(reason) {
  const dialog = $("manager-dialog");
  $("manager-reason").textContent = reason;
  $("manager-token").value = "";
  dialog.showModal();
  $("manager-token").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "approve" ? $("manager-token").value.trim() || null : null),
      { once: true },
    );
  });
}

// Run `request(token)` with the page's own token; if the till answers that it needs a
// manager, ask for one and run it once more with theirs.
export async function withApproval(request) {
  try {
    return await request(undefined);
  } catch (err) {
    if (!needsManager(err)) throw err;
    const token = await askManager(err.message);
    if (!token) {
      const cancelled = new Error(`not done: ${err.message}, and no manager approved it`);
      cancelled.status = 403;
      throw cancelled;
    }
    return request(token);
  }
}
