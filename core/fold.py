"""The plug-in point between the log and the state it feeds.

`core/` knows nothing of merge semantics; `conflict/` does. The log calls a
`StateFold` inside the same SQLite transaction that stores the events, so an
event and the state change it causes become durable together (or not at all).
The fold gets whole batches so it can use one `executemany` per table.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Protocol

import msgspec

from core.events import Body, Event

__all__ = ["FLAG_REVOKED", "FLAG_SKEWED", "FLAG_UNAPPLIED", "Accepted", "StateFold"]

FLAG_SKEWED = 1  # HLC was too far ahead of our wall clock when received
FLAG_UNAPPLIED = 2  # type or schema unknown to this build: stored, forwarded, not folded
FLAG_REVOKED = 4  # its origin was revoked before it (`key.revoked`): stored, never folded


class Accepted(msgspec.Struct, frozen=True, gc=False):
    """An event the log has just made durable, with its validated body."""

    event: Event
    body: Body
    flags: int = 0


class StateFold(Protocol):
    """State derived from events. Must give the same state for the same set of events,
    whatever the order they are applied in, and be idempotent per event."""

    version: int  # bump to make every log rebuild its state on open
    tables: tuple[str, ...]  # the state tables, snapshotted by compaction

    # Also called again after a compaction snapshot was loaded into the tables: the fold
    # re-derives there whatever it keeps beside them (not snapshotted).
    def create_tables(self, conn: sqlite3.Connection) -> None: ...

    def drop_tables(self, conn: sqlite3.Connection) -> None: ...

    def apply(self, conn: sqlite3.Connection, batch: Sequence[Accepted]) -> None: ...

    # Work `apply` held back to keep a big batch fast, one short slice of it (the log
    # calls it when idle, each in its own transaction); True while more is left.
    def settle(self, conn: sqlite3.Connection) -> bool: ...
