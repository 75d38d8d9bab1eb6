"""HTTP response models of the replica as a whole: its status (with the card exposure
it carries), health, digest and shop, and `EventOut`, the reply to every write.

Split from `replicas.api.models`, which re-exports every name here: callers keep using
`from replicas.api import models as m`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

__all__ = [
    "ClockAheadView",
    "DigestOut",
    "EventOut",
    "ExposureView",
    "HealthOut",
    "SalesSummaryView",
    "ShopOut",
    "StatusOut",
]


class EventOut(BaseModel):
    event_id: str
    hlc: int
    at: str


class SalesSummaryView(BaseModel):
    sales: int
    gross: int
    voided: int
    refunded: int
    net: int


class ClockAheadView(BaseModel):
    events: int
    newest: str = Field(description="the newest such event's time, ISO 8601 UTC")
    ahead_ms: int = Field(description="how far it was ahead of this replica's clock, now")


class StatusOut(BaseModel):
    replica_id: str
    online: bool
    version_vector: dict[str, int]
    events: int
    pending: int = Field(description="held: waiting for a missing predecessor")
    quarantined: int
    clock_ahead: dict[str, ClockAheadView] = Field(
        default_factory=dict,
        description="since this replica started: per origin, events received too far ahead"
        " of this replica's clock (kept and applied; the clock was not dragged forward)",
    )
    unsynced_to_hq: int = Field(
        description="own events (sales, refunds, stock moves, ...) HQ does not yet hold durably"
    )
    sales: SalesSummaryView
    sync: dict[str, Any] = Field(description="the sync engine's status; {} without network")
    digest: str | None = Field(description="state digest; null when ?digest=false")
    open_conflicts: int | None = Field(
        default=None, description="unresolved business conflicts; null when ?conflicts=false"
    )
    card_exposure: ExposureView | None = Field(
        default=None,
        description="this store's (at HQ: every store's) offline card payments outstanding",
    )
    evidence: dict[str, int] | None = Field(
        default=None,
        description="refused events kept as evidence, by kind (SignatureError: not its"
        " origin's writing; Equivocation: its origin signed two versions); null when"
        " ?conflicts=false",
    )
    stale_snapshot: dict[str, str] = Field(
        default_factory=dict,
        description="per origin, why this log's compaction snapshot holds events that are no"
        " longer state (revoked, or signed by a retired key): restore it from HQ",
    )


class ExposureView(BaseModel):
    """Card payments taken offline and not yet captured, declined or expired: the risk
    the store carries (`conflict.reports.offline_exposure`)."""

    payments: int
    amount: int
    oldest_age_s: int | None = Field(description="seconds since the oldest was taken")


class ShopOut(BaseModel):
    replica_id: str
    store: str
    store_name: str = Field(description="the name receipts show (site.json store_names)")
    tax_mode: Literal["inclusive", "exclusive"] = Field(
        description="inclusive: catalog prices hold the tax; exclusive: tax is added to them"
    )


class DigestOut(BaseModel):
    digest: str


class HealthOut(BaseModel):
    ok: bool
    replica_id: str
