"""Who may call what: the one policy table of the HTTP API, and the check every request
goes through.

A request carries `Authorization: Bearer <token>`; the token's role must be at least
the route's (`POLICY`). Without a token: 401. With one whose role is too low: 403,
saying which role the action needs. `/healthz`, the till page's files and the API docs
are public. A replica with no tokens issued and listening on loopback only is open
(the one-machine demo); listening on any other address it refuses to start without
tokens (`runtime`). A route missing from the table is refused, not opened (a test
checks every route is in it).

Who a write is made by: a token bound to a person (`tillmesh token issue --person
C042`) writes as that person only; `person_of` fills the request's `cashier`/`by` with
them and refuses another name (403). A device's token (a till's front end, a tablet)
states who the cashier is, and vouches for it by its role. Events that name no cashier
record the credential itself (`made_by`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, Request

from replicas.api.tokens import Role, TokenRecord, TokenStore

__all__ = [
    "POLICY",
    "PUBLIC",
    "Access",
    "CashierLimits",
    "authorize",
    "caller",
    "made_by",
    "person_of",
]

PUBLIC = None
R, C, M, A = Role.read_only, Role.cashier, Role.manager, Role.hq_admin

# (method, route) -> the lowest role allowed; PUBLIC: no token needed.
POLICY: dict[tuple[str, str], Role | None] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/"): PUBLIC,  # the till page (it pairs with a token of its own to sell)
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    ("GET", "/sw.js"): PUBLIC,  # the till page's service worker (its offline app shell)
    ("GET", "/status"): R,
    ("GET", "/metrics"): R,  # Prometheus sends a read_only token (README, "Metrics")
    ("GET", "/dashboard"): PUBLIC,  # HQ's dashboard page; it pairs with a token to read
    ("GET", "/dashboard/data"): R,
    ("GET", "/shop"): R,
    ("GET", "/state/digest"): R,
    ("GET", "/catalog"): R,
    ("GET", "/catalog/{sku}"): R,
    ("PUT", "/catalog/{sku}"): A,
    ("PUT", "/catalog/{sku}/price"): M,  # a store's price; at HQ the chain's: hq_admin (catalog.py)
    ("GET", "/conflicts"): R,
    ("POST", "/conflicts/{conflict_id}/resolve"): M,
    ("POST", "/keys/{replica:path}/revoke"): A,  # at HQ only (keys.py)
    ("POST", "/keys/{replica:path}/rotate"): A,  # at HQ only (keys.py)
    ("POST", "/keys/rotate"): M,  # at a till: its own key; takes effect once HQ vouches
    ("GET", "/link/hq"): R,
    ("PUT", "/link/hq"): M,  # cuts the store off from HQ
    ("GET", "/reports/sales"): R,
    ("GET", "/reports/payments"): R,
    ("GET", "/reports/items"): R,
    ("GET", "/reports/stock"): R,
    ("GET", "/reports/prices"): R,
    ("GET", "/reports/tax"): R,
    ("GET", "/reports/exposure"): R,
    ("GET", "/reports/declines"): R,
    ("GET", "/cards/limits"): R,
    ("PUT", "/cards/limits"): A,  # at HQ only (card_limits.py)
    ("POST", "/sales"): C,  # a price other than the catalog's needs a manager (sales.py)
    ("GET", "/sales/{sale_id:path}"): R,
    ("POST", "/sales/{sale_id:path}/void"): C,
    ("POST", "/sales/{sale_id:path}/refunds"): M,
    ("GET", "/receipts/{receipt:path}"): R,
    ("POST", "/shifts"): C,
    ("POST", "/shifts/{shift}/close"): M,
    ("GET", "/shifts/{shift}"): R,
    ("GET", "/shift"): R,
    ("POST", "/stock/{sku}/receive"): C,
    ("POST", "/stock/{sku}/adjust"): M,
    ("POST", "/stock/{sku}/count"): M,
    ("GET", "/stock"): R,
    ("GET", "/stock/{sku}"): R,
}


@dataclass(frozen=True)
class CashierLimits:
    """What a cashier's token may do alone (site policy, `site.json`); beyond it, a
    manager's token: a line discount above `discount_bp` of the line's value (basis
    points), a void of another till's sale or of one older than `void_within_s`."""

    discount_bp: int = 1000
    void_within_s: int = 900


class Access:
    """The API's view of its tokens: `open` while none is issued on a loopback replica
    (and for an app made without a token store: the in-process tests)."""

    def __init__(
        self,
        store: TokenStore | None,
        loopback_only: bool = True,
        limits: CashierLimits = CashierLimits(),
    ) -> None:
        self.store, self.loopback_only, self.limits = store, loopback_only, limits

    @property
    def open(self) -> bool:
        return self.store is None or (self.loopback_only and not self.store.records())


def authorize(request: Request) -> None:
    """FastAPI dependency of every route: the caller's token allows this route."""
    access: Access = request.app.state.access
    route = request.scope.get("route")
    key = (request.method, getattr(route, "path", request.url.path))
    if key not in POLICY:
        raise HTTPException(403, "no one may call this route")  # fail closed
    needed = POLICY[key]
    if needed is PUBLIC or access.open:
        request.state.role = Role.hq_admin if access.open else None
        return
    assert access.store is not None  # not open
    record = _caller(request, access.store)
    if record.level < needed:
        raise HTTPException(
            403,
            f"{request.method} {key[1]} needs the {needed.name} role; this token is"
            f" {record.role} ({record.name})",
        )
    request.state.role, request.state.token = record.level, record


def _caller(request: Request, store: TokenStore) -> TokenRecord:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    record = store.verify(token.strip()) if scheme.lower() == "bearer" else None
    if record is None:
        raise HTTPException(
            401,
            "a valid API token is needed (Authorization: Bearer ...); issue one with"
            " `tillmesh token issue`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return record


def caller(request: Request) -> TokenRecord | None:
    """The token a request came with; None on an open replica (the demo, no identities)."""
    token: TokenRecord | None = getattr(request.state, "token", None)
    return token


def person_of(request: Request, stated: str, doing: str) -> str:
    """Who a write is made by, as the request states it (`cashier`, `by`), checked against
    its credential. A person's token: the request may leave it out (it is filled in) or
    name that person; any other name is a 403. A device's token, or the open demo: the
    stated name stands ('' if none), the device vouching for it by its role."""
    token = caller(request)
    if token is None or not token.person:
        return stated
    if stated and stated != token.person:
        raise HTTPException(403, f"this token is {token.person}'s; it cannot {doing} as {stated}")
    return token.person


def made_by(request: Request, stated: str, doing: str) -> str:
    """The `by` of an event: the person (`person_of`), else the credential that made it
    ("front end t1 (token 3f9a2c1b)"); '' on the open demo with no one named."""
    person = person_of(request, stated, doing)
    token = caller(request)
    return person or (token.label if token is not None else "")
