"""Diff (`tillmesh log diff`): how two replica databases differ over their common scope.

Cheap comparisons first, so two equal logs of a million events compare in milliseconds:
per origin the heads (seq and hash: equal heads stand for the whole chain below them,
since each event names its predecessor's hash), and where they differ the seq the two
chains part at, found by bisecting on stored hashes (`core.portable.compare_logs`);
then the states by their maintained digests (`queries.state_digest`), with the stock
and sales figures that differ. Only a database holding origins outside the common scope
is folded, into a scratch database (`ops.scratch_state`).

Equal heads prove equal events only for logs whose rows are all there and whose stored
hashes are those of the bytes. By default each compared origin's head row is checked
against its event's bytes (one event per origin); `verify=True` (`--verify`) first runs
`core.verify.verify_log` over both logs (contiguity from the base, hashes, chain links,
head rows), which reads every event. A defect in a compared origin makes the diff
DAMAGED, never SAME.

Two logs are only comparable when one's scope contains the other's (HQ and a till, two
tills of one store). Two tills of different stores share HQ's origins and nothing else:
agreeing there says nothing about the rest, so the diff says their scopes differ and
which origins each holds that the other cannot, never SAME.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from conflict import queries
from core import segments
from core.compact import read_heads
from core.errors import StorageError
from core.events import HQ, decode_event, event_hash, store_of
from core.portable import OriginDiff, compare_logs
from core.verify import Finding, verify_log
from replicas.ops.common import Progress, Scope, replica_of, scope_of, scratch_state

__all__ = ["DbDiff", "StateDiff", "diff_dbs"]


@dataclass
class StateDiff:
    compared: bool
    note: str = ""
    digest_a: str = ""
    digest_b: str = ""
    stock: dict[str, tuple[int, int]] = field(default_factory=dict)
    sales: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def differs(self) -> bool:
        return self.compared and self.digest_a != self.digest_b


@dataclass
class DbDiff:
    replica_a: str | None
    replica_b: str | None
    origins: list[OriginDiff]
    state: StateDiff
    # `log verify` defects of each side in the compared origins: the stored heads and
    # hashes the comparison reads then prove nothing about the events.
    defects_a: list[Finding] = field(default_factory=list)
    defects_b: list[Finding] = field(default_factory=list)
    verified: bool = False  # every event re-checked (`--verify`), not only the heads
    # Set when neither scope contains the other: origins each holds outside the other's.
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    @property
    def scopes_differ(self) -> bool:
        return bool(self.only_a and self.only_b) or _disjoint(self.replica_a, self.replica_b)

    @property
    def differs(self) -> bool:
        """The stored events or the states differ (see `damaged` for what that is worth),
        or the logs hold different scopes (then they are never the same)."""
        return self.scopes_differ or self.state.differs or any(o.differs for o in self.origins)

    @property
    def damaged(self) -> bool:
        return bool(self.defects_a or self.defects_b)


def diff_dbs(
    a: sqlite3.Connection,
    b: sqlite3.Connection,
    progress: Progress | None = None,
    *,
    verify: bool = False,
) -> DbDiff:
    """Missing ranges, where chains part and state differences over the common scope,
    after checking both logs' heads, or verifying them whole with `verify` (`progress`
    then advances by events verified)."""
    ra, rb = replica_of(a), replica_of(b)
    scope_a, scope_b = scope_of(ra), scope_of(rb)

    def scope(origin: str) -> bool:
        return scope_a(origin) and scope_b(origin)

    check = _defects if verify else _head_defects
    defects_a = check(a, scope, progress)
    defects_b = check(b, scope, progress)
    d = DbDiff(ra, rb, compare_logs(a, b, scope), _diff_state(a, b, scope))
    d.defects_a, d.defects_b, d.verified = defects_a, defects_b, verify
    only_a = sorted(o for o in read_heads(a) if not scope_b(o))
    only_b = sorted(o for o in read_heads(b) if not scope_a(o))
    if (only_a and only_b) or _disjoint(ra, rb):
        d.only_a, d.only_b = only_a, only_b
    return d


def _disjoint(ra: str | None, rb: str | None) -> bool:
    """Tills of two different stores: neither's scope contains the other's."""
    stores = {store_of(r) for r in (ra, rb) if r is not None and r != HQ}
    return len(stores) == 2


def _defects(conn: sqlite3.Connection, scope: Scope, progress: Progress | None) -> list[Finding]:
    """verify_log's defects in the compared origins (the others do not enter the diff).

    verify_log walks each origin's rows from its base by primary key, so a missing row
    is a gap or a head mismatch, altered bytes a hash mismatch, a re-hashed one a broken
    chain: the count of rows is head - base exactly when none is reported.
    """
    report = verify_log(conn, _advancing(progress))
    return [f for f in report.defects if scope(f.origin)]


def _head_defects(
    conn: sqlite3.Connection, scope: Scope, progress: Progress | None = None
) -> list[Finding]:
    """Per compared origin, the head row against its event: the row is there, its
    stored hash is its bytes' hash and the head's. One event per origin."""
    found = []
    for origin, head in read_heads(conn).items():
        if not scope(origin) or head.seq <= head.base:
            continue
        raw = segments.raw_at(conn, origin, head.seq)
        stored = segments.hash_at(conn, origin, head.seq)
        if raw is None or stored is None:
            found.append(Finding("defect", "head-missing", origin, head.seq, "no event at head"))
        elif stored != head.hash or event_hash(decode_event(raw)) != head.hash:
            detail = "the head event's bytes or stored hash are not the head's"
            found.append(Finding("defect", "head-mismatch", origin, head.seq, detail))
    return found


def _advancing(progress: Progress | None) -> Progress | None:
    """verify_log reports a running total; a progress bar wants the increments."""
    if progress is None:
        return None
    done = 0

    def advance(total: int) -> None:
        nonlocal done
        progress(total - done)
        done = total

    return advance


def _diff_state(a: sqlite3.Connection, b: sqlite3.Connection, scope: Scope) -> StateDiff:
    state_a = state_b = a
    try:
        state_a = _scoped_state(a, scope)
        state_b = _scoped_state(b, scope)
    except StorageError as e:
        if state_a is not a:
            state_a.close()
        return StateDiff(False, f"state not compared: {e}")
    try:
        d = StateDiff(True, "", queries.state_digest(state_a), queries.state_digest(state_b))
        if d.digest_a != d.digest_b:
            d.stock = _pairs(queries.stock_levels(state_a), queries.stock_levels(state_b))
            sa, sb = queries.sales_summary(state_a), queries.sales_summary(state_b)
            d.sales = _pairs(sa._asdict(), sb._asdict())
        return d
    finally:
        for conn in (state_a, state_b):
            if conn not in (a, b):
                conn.close()


def _scoped_state(conn: sqlite3.Connection, scope: Scope) -> sqlite3.Connection:
    """The database itself if it holds nothing outside `scope`, else a scratch fold."""
    if all(scope(o) for o in read_heads(conn)):
        return conn
    return scratch_state(conn, scope)


def _pairs(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    keys = sorted(a.keys() | b.keys())
    return {k: (a.get(k, 0), b.get(k, 0)) for k in keys if a.get(k, 0) != b.get(k, 0)}
