"""What the HQ dashboard shows, per store and till, from HQ's existing read interfaces.

Two halves, kept apart so each can come from elsewhere later (a PostgreSQL HQ):
- `link_view`: from the sync engine's status (`Replica.sync_status`: per origin the
  events held, how many some peer holds beyond (not yet at HQ), for how long, when
  the till last announced) and HQ's leaf links (`leaves`);
- `state_figures`: from the state, by `conflict.reports` and `conflict.detect` on
  one read snapshot: today's takings per till, sales per hour per store, deferred card
  exposure per till, open conflicts per store. `sales_figures` is the part any module
  of report queries gives (`replicas.hq.reports` on HQ's PostgreSQL), `conflict_counts`
  the part the fold's state gives (HQ on PostgreSQL keeps one: `replicas.hq.folded`).
`dashboard` joins them with the site's list of stores and tills (a till never heard
still has its row). Money is int minor units.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import ModuleType
from typing import Any

from conflict import reports
from conflict.conflicts import Conflict
from conflict.detect import detect
from conflict.policies import from_state
from conflict.reports import Window
from core.events import store_of

__all__ = [
    "HEARD_WITHIN",
    "conflict_counts",
    "dashboard",
    "link_view",
    "sales_figures",
    "state_figures",
    "today",
]

Record = dict[str, Any]
# A till announces every 5 s (SyncConfig.announce_interval); three missed is offline,
# as the till's own light has it (runtime.ONLINE_WITHIN).
HEARD_WITHIN = 15.0
CHAIN = "chain"  # conflicts of no one store (catalog prices written at HQ)


def today(now: datetime, utc_offset_min: int) -> Window:
    """From local midnight of `now`'s day (in that offset) on: 'today' for takings."""
    zone = timezone(timedelta(minutes=utc_offset_min))
    local = now.astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return Window.between(midnight, None, None, utc_offset_min)


def state_figures(conn: sqlite3.Connection, window: Window) -> Record:
    """Figures read from the state on one snapshot (see the module doc)."""
    return {**sales_figures(reports, conn, window), "conflicts": conflict_counts(conn)}


def conflict_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Open conflicts per store (CHAIN: of no one store), detected on the fold's state."""
    conflicts: dict[str, int] = {}
    for c in detect(conn, from_state(conn), open_only=True):
        for store in _stores_of(c):
            conflicts[store] = conflicts.get(store, 0) + 1
    return conflicts


def sales_figures(source: ModuleType, conn: Any, window: Window) -> Record:
    """Takings per till, sales per hour per store, deferred cards per till, by the
    report queries of `source` on `conn`; conflicts None: not known from these (a
    caller with the fold's state adds them: `conflict_counts`)."""
    per_till = source.sales_report(conn, ["till"], window)
    hourly = source.sales_report(conn, ["store", "hour"], window)
    deferred = source.deferred_cards(conn)
    return {
        "takings": {r["till"]: (r["sales"], r["net"]) for r in per_till},
        "hourly": [(r["store"], r["hour"], r["sales"], r["net"]) for r in hourly],
        "deferred": {r["till"]: (r["payments"], r["amount"]) for r in deferred},
        "conflicts": None,
    }


def _stores_of(c: Conflict) -> set[str]:
    """The store a conflict is kept in, else the stores its events come from."""
    if c.store is not None:
        return {c.store}
    stores = {store_of(e.rpartition(":")[0]) for e in c.events}
    return {s or CHAIN for s in stores}


def link_view(sync: Mapping[str, Any], leaves_known: bool) -> dict[str, Record]:
    """Per origin, what the sync engine knows: last seen, not yet here, lag, online.
    `leaves_known`: HQ's leaf links show every till (one hub node), so a link down
    means offline at once; with several hub nodes a till may link to another one."""
    leaves: Mapping[str, bool] = sync.get("leaves") or {}
    out: dict[str, Record] = {}
    for origin, s in (sync.get("origins") or {}).items():
        seen = s.get("last_seen")
        heard = seen is not None and seen < HEARD_WITHIN
        out[origin] = {
            "online": heard and (leaves.get(origin, False) or not leaves_known),
            "last_seen_s": None if seen is None else round(seen, 1),
            "not_at_hq": s.get("behind", 0),
            "lag_s": round(s.get("missing_for") or 0.0, 1),
            "events_at_hq": s.get("held", 0),
        }
    return out


def dashboard(
    stores: Mapping[str, Sequence[str]],
    links: Mapping[str, Record],
    figures: Record,
    window: Window,
    now: datetime,
) -> Record:
    """The dashboard's JSON: every store of the site with its tills, and chain totals
    (conflict counts None where the figures hold none: not known, as on PostgreSQL)."""
    out = [_store(store, tills, links, figures) for store, tills in sorted(stores.items())]
    known = figures["conflicts"] is not None
    totals: dict[str, int | None] = {
        key: sum(s[key] for s in out)
        for key in ("sales", "takings", "deferred_exposure", "not_at_hq")
    }
    totals["open_conflicts"] = sum(s["open_conflicts"] for s in out) if known else None
    return {
        "generated_at": now.astimezone(UTC).isoformat(timespec="seconds"),
        "utc_offset": window.utc_offset_min,
        "stores": out,
        "chain_conflicts": figures["conflicts"].get(CHAIN, 0) if known else None,
        "totals": totals,
    }


def _store(
    store: str, tills: Sequence[str], links: Mapping[str, Record], figures: Record
) -> Record:
    rows = [_till(f"{store}/{t}", links, figures) for t in tills]
    hours = {h: (n, net) for s, h, n, net in figures["hourly"] if s == store}
    return {
        "store": store,
        "online": sum(r["online"] for r in rows),
        "tills_count": len(rows),
        "sales": sum(r["sales"] for r in rows),
        "takings": sum(r["takings"] for r in rows),
        "deferred_exposure": sum(r["deferred_exposure"] for r in rows),
        "not_at_hq": sum(r["not_at_hq"] for r in rows),
        "open_conflicts": (
            None if figures["conflicts"] is None else figures["conflicts"].get(store, 0)
        ),
        "per_hour": [{"hour": h, "sales": n, "net": net} for h, (n, net) in sorted(hours.items())],
        "tills": rows,
    }


def _till(till: str, links: Mapping[str, Record], figures: Record) -> Record:
    link = links.get(till) or {
        "online": False, "last_seen_s": None, "not_at_hq": 0, "lag_s": 0.0, "events_at_hq": 0
    }  # fmt: skip
    sales, net = figures["takings"].get(till, (0, 0))
    n_deferred, deferred = figures["deferred"].get(till, (0, 0))
    return {
        "till": till, **link, "sales": sales, "takings": net,
        "deferred_payments": n_deferred, "deferred_exposure": deferred,
    }  # fmt: skip
