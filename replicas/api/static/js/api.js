// The till's own HTTP API. An error carries `status` when the till answered (the request
// was refused, nothing changed) and none when it did not (unreachable, timed out: the
// request may or may not have been applied, so only an idempotent retry is safe).

export const TOKEN_KEY = "tillmesh-token";
export const TIMEOUT_MS = 10000; // a durable sale takes milliseconds; past this, retry

let onUnauthorised = () => {};

export function whenUnauthorised(handler) {
  onUnauthorised = handler;
}

// `token`: a manager's, for one approved request; default: the page's own.
export async function api(method, path, body, { timeoutMs = TIMEOUT_MS, token } = {}) {
  const init = { method, headers: { Accept: "application/json" } };
  const bearer = token || localStorage.getItem(TOKEN_KEY);
  if (bearer) init.headers.Authorization = `Bearer ${bearer}`;
  init.signal = AbortSignal.timeout(timeoutMs);
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (res.status === 401 && !token) onUnauthorised();
  if (!res.ok) {
    const err = new Error(describe(data, res.status));
    err.status = res.status;
    throw err;
  }
  return data;
}

// FastAPI errors: a string, or a list of {loc, msg} for field errors.
function describe(data, status) {
  const d = data && data.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) {
    return d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  }
  return `request failed (${status})`;
}

// A 403 whose reason is a role: a manager may approve it.
export function needsManager(err) {
  return err.status === 403 && /manager role/.test(err.message);
}

export function unreachable(err) {
  return err.status === undefined;
}
