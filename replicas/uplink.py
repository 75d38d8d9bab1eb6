"""Which uplink and HQ hub node a till's leaf link uses right now, for `status`.

A store's leaf link lists every hub node over the WAN, then over each backup uplink
(`Site.uplink_table`); nats-server walks down that list when the link in use dies
(its 1 s pings notice within ~3 s). The till's own nats-server says where its leaf is
connected (`/leafz`, on loopback); this maps that address back to the uplink's name.

Failing back: a leaf remote does not return to an earlier URL by itself while the
current one works (nats-server picks the next URL only after a disconnect). tillmesh
leaves it so: the backup link carries the store's few KB/s of events until it fails
or the till restarts, and status shows it ("uplink lte via hq2"), so a store that
pays for LTE by volume sees it; `PUT /link/hq` off and on again moves it back.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["UplinkState", "leaf_names", "read_leaves", "read_uplink"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UplinkState:
    connected: bool
    uplink: str | None = None  # "wan", "lte", ... as the site names them
    hub: str | None = None  # the HQ hub node at the far end
    address: str | None = None  # "host:port" dialled
    rtt: str | None = None  # nats-server's last measured round trip, e.g. "1.2ms"

    def describe(self) -> str:
        if not self.connected:
            return "no link to HQ"
        where = self.uplink or "unknown uplink"
        return f"{where} via {self.hub or '?'} ({self.address}, rtt {self.rtt or '?'})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_uplink(leafz: dict[str, Any], table: Sequence[tuple[str, str, str]]) -> UplinkState:
    """The uplink a till's `/leafz` shows in use, named from `table` (uplink, hub node,
    "host:port") as `Site.uplink_table` lists it."""
    leafs = leafz.get("leafs") or []
    if not leafs:
        return UplinkState(connected=False)
    leaf = leafs[0]  # a till's server has one leaf remote, so at most one connection
    address = f"{leaf.get('ip')}:{leaf.get('port')}"
    for uplink, hub, addr in table:
        if addr == address or addr == f"[{leaf.get('ip')}]:{leaf.get('port')}":
            return UplinkState(True, uplink, hub, address, leaf.get("rtt"))
    # The hub gossips its peers' leaf URLs: a link to one the site does not list.
    return UplinkState(True, None, leaf.get("name"), address, leaf.get("rtt"))


def leaf_names(stores: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The nats-server name of each till (`broker.config`: "<store>-<till>") -> its id."""
    return {
        f"{store}-{till}": f"{store}/{till}" for store, tills in stores.items() for till in tills
    }


def read_leaves(leafz: dict[str, Any], names: Mapping[str, str]) -> dict[str, bool]:
    """At a hub node: per till of `names`, whether its leaf link is connected here."""
    up = {leaf.get("name") for leaf in leafz.get("leafs") or []}
    return {till: server in up for server, till in names.items()}
