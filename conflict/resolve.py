"""A manager's decision on a conflict, as one event that replicates like any other.

`resolution_bodies` builds the `ConflictResolved` event (who, why; the log gives it its
HLC) with what it changes in its own body (schema 5). The fold applies those effects
only if it is the conflict's effective resolution, the earliest by (hlc, origin) at
every replica (`effects.py`): two managers resolving one conflict on two sides of a
partition correct the stock once, and the later decision stays visible as superseded.

- accept: no effect; the conflict stays in the history as accepted.
- choose_price (concurrent_price): `price` of `sku`, a catalog write at the resolution's
  HLC. `detect` does not count it as a new concurrent write. It takes effect under the
  price policy like any write: under "hq_wins" a store's choice made within the window
  of an HQ write still yields to it.
- compensate (`moves`):
  - oversell: a move raising the store's stock of the SKU back to zero (from its level
    as the resolving replica sees it);
  - double_refund / over_refund: moves reversing the restock of the refunds beyond
    the first (all of them if the sale was voided, as the void restocked it). Money
    cannot be taken back by an event; the resolution records it.
- recount (oversell, count_during_sales): optionally `count` of `sku`, the count the
  manager took; without one the resolution records that a recount was ordered.
- supersede (a catalog override, no detected conflict needed): the conflict id is
  `catalog:<sku>` and `supersedes` names writes of that SKU (event ids); the
  `ConflictResolved` takes them out of the catalog whatever their HLC
  (`catalog.py`). It is recorded under the id of a `catalog_override` conflict
  (`override_conflict`), which `tillmesh conflicts` lists as resolved. A replica may
  supersede what `catalog.may_supersede` allows: HQ any write, a till its own store's.
- paid_other_way / written_off / refund_reversed (card_declined): no effect; the
  resolution records what became of the money the processor did not pay (schema 6).

Which actions fit which kind is `ACTIONS`; anything else is a `ConflictError`.

Stock effects count in the store of the replica that appends them (`stock.stock_store`
of its id), so a compensation or a recount with a count must be appended by a replica of
the store whose stock it fixes: elsewhere (HQ for a store's oversell) it is a
`WrongStore` error saying to resolve it on a till of that store. Accept, choose_price
and a recount without a count change no stock and work on any replica.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeVar

import msgspec

from conflict import queries
from conflict.catalog import SUPERSEDED, may_supersede
from conflict.detect import Conflict, conflict_id, find_conflict
from conflict.errors import ConflictError, UnknownConflict, WrongStore
from conflict.links import refund_moves
from conflict.policies import Policies
from conflict.stock import stock_store
from core.events import Body, ConflictResolved, Event, ResolvedMove

__all__ = [
    "ACTIONS",
    "CATALOG_PREFIX",
    "Action",
    "ResolvingLog",
    "override_conflict",
    "resolution_bodies",
    "resolve",
]

Action = Literal[
    "accept", "compensate", "choose_price", "recount", "supersede",
    "paid_other_way", "written_off", "refund_reversed",
]  # fmt: skip
CATALOG_PREFIX = "catalog:"  # `catalog:<sku>`: the writes of a SKU, to supersede some
T = TypeVar("T")


class ResolvingLog(Protocol):
    """What resolving needs of a log: reads of its folded state and appends. A SQLite
    `EventLog` is one; HQ on PostgreSQL is another (`replicas.hq.folded.FoldingLog`)."""

    @property
    def replica_id(self) -> str: ...

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def append_many(self, bodies: Sequence[Body]) -> list[Event]: ...


ACTIONS: dict[str, tuple[Action, ...]] = {
    "oversell": ("accept", "compensate", "recount"),
    "concurrent_price": ("accept", "choose_price"),
    "double_void": ("accept",),
    "double_refund": ("accept", "compensate"),
    "over_refund": ("accept", "compensate"),
    "refund_unknown_sale": ("accept",),
    "receipt_collision": ("accept",),
    "count_during_sales": ("accept", "recount"),
    "catalog_override": ("supersede",),
    "card_declined": ("paid_other_way", "written_off", "refund_reversed"),  # CARD_ACTIONS
}


_WRITES = f"SELECT w.origin, {SUPERSEDED} FROM st_catalog_writes w WHERE w.eid = ? AND w.sku = ?"


def override_conflict(
    conn: sqlite3.Connection, sku: str, supersedes: list[str], author: str
) -> Conflict:
    """The `catalog_override` conflict a supersede of `supersedes` (writes of `sku`) by
    replica `author` resolves; a `ConflictError` unless each is a write of `sku` here,
    still in effect, that `author` may supersede."""
    if not supersedes:
        raise ConflictError("name the writes to supersede (event ids, e.g. hq:7)")
    for eid in supersedes:
        row = conn.execute(_WRITES, (eid, sku)).fetchone()
        if row is None:
            raise ConflictError(f"{eid} is not a catalog write of {sku} on this replica")
        if row[1]:
            raise ConflictError(f"{eid} is already superseded")
        if not may_supersede(author, row[0]):
            raise ConflictError(
                f"{author} may not supersede {eid} (a till only its own store's writes;"
                " resolve it at HQ)"
            )
    cid = conflict_id("catalog_override", sku, supersedes)
    return Conflict(cid, "catalog_override", sku, sorted(set(supersedes)), {})


def _check(conflict: Conflict, action: Action, price: int | None, count: int | None) -> None:
    if conflict.resolution is not None:
        r = conflict.resolution
        raise ConflictError(f"conflict {conflict.id} is already resolved ({r.action} by {r.by})")
    allowed = ACTIONS.get(conflict.kind, ("accept",))
    if action not in allowed:
        raise ConflictError(
            f"{conflict.kind} cannot be resolved by {action}; use one of: {', '.join(allowed)}"
        )
    if (price is not None) != (action == "choose_price"):
        raise ConflictError("--price is required with choose_price and only allowed with it")
    if count is not None and action != "recount":
        raise ConflictError("--count is only allowed with recount")


def _own_store(conflict: Conflict, store: str | None, author: str) -> str:
    """The store a stock fix is for, if `author`'s stock events count there."""
    if store is None:  # only stock kinds carry a store; nothing to fix elsewhere
        raise ConflictError(f"{conflict.kind} has no stock to fix; use accept")
    if stock_store(author) != store:
        raise WrongStore(conflict.id, store, author)
    return store


def _oversell_fix(conn: sqlite3.Connection, conflict: Conflict, author: str) -> list[ResolvedMove]:
    store, sku = _own_store(conflict, conflict.store, author), conflict.subject
    level = queries.stock_levels(conn, [sku], store=store)[sku]
    if level >= 0:
        raise ConflictError(
            f"stock of {sku} in {store} is {level}, not below zero: nothing to compensate"
            " (use accept)"
        )
    return [ResolvedMove(sku=sku, delta=-level)]


def _refund_fix(conn: sqlite3.Connection, conflict: Conflict, author: str) -> list[ResolvedMove]:
    rows = conn.execute(
        "SELECT eid FROM st_refunds WHERE sale_id = ? ORDER BY hlc, origin, seq",
        (conflict.subject,),
    ).fetchall()
    refunds = [eid for (eid,) in rows if eid in set(conflict.events)]
    voided = "voided" in str(conflict.details.get("why", ""))
    reverse = refunds if voided else refunds[1:]
    moves: list[ResolvedMove] = []
    for eid in reverse:
        for store, sku, _, _, _, qty in refund_moves(conn, eid):
            _own_store(conflict, store, author)  # the restock counted in the refund's store
            moves.append(ResolvedMove(sku=sku, delta=-qty))
    if not moves:
        raise ConflictError("no restock to reverse (money needs no event here); use accept")
    return moves


def resolution_bodies(
    conn: sqlite3.Connection,
    conflict: Conflict,
    action: Action,
    by: str,
    reason: str,
    *,
    author: str,
    price: int | None = None,
    count: int | None = None,
) -> list[Body]:
    """The event resolving `conflict` as the state on `conn` stands, to be appended by
    replica `author` (its store decides where stock effects count); see the module doc."""
    _check(conflict, action, price, count)
    head = ConflictResolved(conflict=conflict.id, action=action, by=by, reason=reason)
    if action == "supersede":
        return [msgspec.structs.replace(head, supersedes=conflict.events)]
    if action == "choose_price":
        return [msgspec.structs.replace(head, price=price, sku=conflict.subject)]
    if action == "recount" and count is not None:
        _own_store(conflict, conflict.store, author)
        return [msgspec.structs.replace(head, sku=conflict.subject, count=count)]
    if action == "compensate":
        fix = _oversell_fix if conflict.kind == "oversell" else _refund_fix
        return [msgspec.structs.replace(head, moves=fix(conn, conflict, author))]
    return [head]


async def resolve(
    log: ResolvingLog,
    policies: Policies,
    conflict_id: str,
    action: Action,
    by: str,
    reason: str,
    *,
    price: int | None = None,
    count: int | None = None,
    supersedes: list[str] | None = None,
) -> list[Event]:
    """Find the conflict on the log's state, build its resolution and append it.
    `conflict_id` may be `catalog:<sku>`, with the writes it `supersedes`."""
    if (action == "supersede") != conflict_id.startswith(CATALOG_PREFIX):
        raise ConflictError(f"supersede resolves {CATALOG_PREFIX}<sku>, and only it does")
    if bool(supersedes) != (action == "supersede"):
        raise ConflictError("--supersedes is required with supersede and only allowed with it")

    def build(conn: sqlite3.Connection) -> list[Body]:
        conflict: Conflict | None
        if supersedes:
            sku = conflict_id.removeprefix(CATALOG_PREFIX)
            conflict = override_conflict(conn, sku, supersedes, log.replica_id)
        else:
            conflict = find_conflict(conn, policies, conflict_id)
        if conflict is None:
            raise UnknownConflict(conflict_id)
        return resolution_bodies(
            conn, conflict, action, by, reason, author=log.replica_id, price=price, count=count
        )

    return await log.append_many(await log.read(build))
