// The till page's service worker: its offline app shell. The page and its assets are
// served from this cache first (and refreshed in the background while the till answers),
// so a reload works while the till's server is down or restarting. API calls are never
// cached: they go to the till, and what the page keeps for itself is in IndexedDB.
"use strict";

const CACHE = "tillmesh-shell-v1";
const SHELL = [
  "/",
  "/static/till.css",
  "/static/js/api.js",
  "/static/js/catalog.js",
  "/static/js/db.js",
  "/static/js/main.js",
  "/static/js/money.js",
  "/static/js/queue.js",
  "/static/js/receipt.js",
  "/static/js/returns.js",
  "/static/js/sale.js",
  "/static/js/shift.js",
  "/static/js/ui.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

function isShell(url) {
  return url.origin === self.location.origin && (url.pathname === "/" || url.pathname.startsWith("/static/"));
}

// Cache first, refreshed from the till when it answers (stale-while-revalidate).
async function fromShell(request) {
  const cache = await caches.open(CACHE);
  const key = new URL(request.url).pathname === "/" ? "/" : request;
  const cached = await cache.match(key);
  const fresh = fetch(request)
    .then((res) => {
      if (res.ok) cache.put(key, res.clone());
      return res;
    })
    .catch(() => null);
  return cached || (await fresh) || new Response("till page unavailable offline", { status: 503 });
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method === "GET" && isShell(url)) event.respondWith(fromShell(event.request));
});
