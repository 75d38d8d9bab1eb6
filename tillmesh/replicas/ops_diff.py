"""Diff (`tillmesh log diff`): how two replica databases differ over their common scope.

Per origin: the ranges one lacks and the events they disagree on byte for byte
(`core.portable.compare_logs`); then the state both fold to, compared by digest, with
the stock and sales figures that differ. A database that holds origins outside the
common scope is folded into a scratch database first (`ops.scratch_state`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field

from tillmesh.conflict import queries
from tillmesh.core.compact import read_heads
from tillmesh.core.errors import StorageError
from tillmesh.core.portable import OriginDiff, compare_logs
from tillmesh.replicas.ops import Scope, replica_of, scope_of, scratch_state

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

    @property
    def differs(self) -> bool:
        return self.state.differs or any(o.differs for o in self.origins)


def diff_dbs(a: sqlite3.Connection, b: sqlite3.Connection) -> DbDiff:
    """Missing ranges, byte-level disagreements and state differences over the common scope."""
    ra, rb = replica_of(a), replica_of(b)
    scope_a, scope_b = scope_of(ra), scope_of(rb)

    def scope(origin: str) -> bool:
        return scope_a(origin) and scope_b(origin)

    return DbDiff(ra, rb, compare_logs(a, b, scope), _diff_state(a, b, scope))


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
