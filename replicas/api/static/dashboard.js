// HQ's dashboard: polls GET /dashboard/data every 2 s and redraws. Built with
// textContent only (never innerHTML), so no name from the site or the log is markup.
"use strict";

const TOKEN_KEY = "tillmesh-dashboard-token";
const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// Money is int minor units everywhere in tillmesh; shown with two decimals.
const money = (minor) => (minor / 100).toFixed(2);

async function fetchData() {
  const headers = {};
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  // The browser's own offset: "today" and the hours are the viewer's local ones.
  const offset = -new Date().getTimezoneOffset();
  const res = await fetch(`/dashboard/data?utc_offset=${offset}`, { headers, cache: "no-store" });
  if (res.status === 401 || res.status === 403) {
    $("pair-form").hidden = false;
    throw new Error("this page needs a read_only token");
  }
  if (!res.ok) throw new Error(`HQ answered ${res.status}`);
  return res.json();
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function badge(online) {
  return el("span", { class: `badge ${online ? "online" : "offline"}` }, online ? "online" : "offline");
}

function lastSeen(seconds) {
  return seconds === null ? "never" : `${seconds.toFixed(1)} s ago`;
}

function tillRow(t) {
  const tr = el("tr", { "data-till": t.till });
  const cell = (field, text, cls = "num") => {
    const td = el("td", { "data-field": field, class: cls }, text);
    tr.append(td);
    return td;
  };
  cell("till", t.till, "");
  const state = el("td", { "data-field": "online", "data-value": String(t.online) });
  state.append(badge(t.online));
  tr.append(state);
  cell("last_seen", lastSeen(t.last_seen_s));
  const pending = cell("not_at_hq", t.not_at_hq);
  if (t.not_at_hq > 0) pending.classList.add("warn");
  cell("lag", `${t.lag_s.toFixed(1)} s`);
  cell("deferred", money(t.deferred_exposure));
  cell("sales", t.sales);
  cell("takings", money(t.takings));
  return tr;
}

function tillTable(tills) {
  const table = el("table");
  const head = el("tr");
  for (const h of ["Till", "Link", "Last seen", "Not at HQ", "Lag", "Deferred cards", "Sales", "Takings"]) {
    head.append(el("th", { class: h === "Till" || h === "Link" ? "" : "num" }, h));
  }
  const thead = el("thead");
  thead.append(head);
  table.append(thead);
  const body = el("tbody");
  for (const t of tills) body.append(tillRow(t));
  table.append(body);
  return table;
}

// Sales per hour today (net takings), 24 bars; drawn by hand: no chart library to fetch.
function hourChart(store) {
  const net = new Array(24).fill(0);
  for (const h of store.per_hour) net[Number(h.hour.slice(11, 13))] = h.net;
  const max = Math.max(1, ...net);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 240 140");
  svg.setAttribute("data-chart", store.store);
  net.forEach((value, hour) => {
    const h = Math.round((value / max) * 110);
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("x", String(hour * 10 + 1));
    bar.setAttribute("y", String(120 - h));
    bar.setAttribute("width", "8");
    bar.setAttribute("height", String(h));
    bar.setAttribute("data-hour", String(hour));
    bar.setAttribute("data-net", String(value));
    const tip = document.createElementNS(SVG, "title");
    tip.textContent = `${String(hour).padStart(2, "0")}:00  ${money(value)}`;
    bar.append(tip);
    svg.append(bar);
    if (hour % 6 === 0) {
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", String(hour * 10 + 1));
      label.setAttribute("y", "135");
      label.textContent = `${String(hour).padStart(2, "0")}h`;
      svg.append(label);
    }
  });
  return svg;
}

function storeCard(s) {
  const card = el("section", { class: "store", "data-store": s.store });
  const title = el("h2");
  title.append(el("span", {}, `Store ${s.store}`));
  title.append(el("span", { "data-field": "store-online", class: "muted" },
    `${s.online}/${s.tills_count} tills online`));
  title.append(el("span", { "data-field": "store-conflicts", class: s.open_conflicts ? "warn" : "muted" },
    s.open_conflicts === null ? "conflicts not detected here" : `${s.open_conflicts} open conflicts`));
  title.append(el("span", { "data-field": "store-takings" }, money(s.takings)));
  card.append(title);
  const body = el("div", { class: "store-body" });
  body.append(tillTable(s.tills));
  const chart = el("div");
  chart.append(el("span", { class: "label" }, "Takings per hour today"));
  chart.append(hourChart(s));
  body.append(chart);
  card.append(body);
  return card;
}

function render(data) {
  $("total-takings").textContent = money(data.totals.takings);
  $("total-sales").textContent = data.totals.sales;
  $("total-deferred").textContent = money(data.totals.deferred_exposure);
  $("total-not-at-hq").textContent = data.totals.not_at_hq;
  // null: conflicts not known from what this HQ read: shown as such, never as 0
  $("total-conflicts").textContent = data.totals.open_conflicts === null
    ? "n/a" : data.totals.open_conflicts + data.chain_conflicts;
  $("stores").replaceChildren(...data.stores.map(storeCard));
  $("updated").textContent = `as of ${data.generated_at}`;
  $("updated").dataset.generatedAt = data.generated_at;
}

async function poll() {
  const state = $("poll-state");
  try {
    render(await fetchData());
    state.className = "badge live";
    state.textContent = "live";
  } catch (e) {
    state.className = "badge stale";
    state.textContent = String(e.message || e);
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

$("pair-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const token = $("pair-token").value.trim();
  if (!token) return;
  localStorage.setItem(TOKEN_KEY, token);
  $("pair-token").value = "";
  $("pair-form").hidden = true;
});

poll();
