"""Conflict policies: configuration a store chooses, not code it edits.

- `price`: which concurrent price write is effective ("hq_wins" | "latest" | "lowest").
  It must be the policy the replica's `StoreState` folds with, else `detect` would
  report an effective price the catalog does not show; `from_state` reads it back
  from the state tables and `check_against_state` compares.
- `oversell`: "allow_and_report" (an oversell stays open until a manager resolves it)
  or "flag_recount" (it is flagged as needing a recount, and a stock count of the SKU
  after the oversell resolves it by itself).
- `concurrency_window_ms`: writes whose HLC wall times are this close are "at the same
  time" (concurrent prices, counts during sales).

`load_policies(path)` reads a TOML or JSON file, e.g.::

    price = "hq_wins"
    oversell = "flag_recount"
    concurrency_window_ms = 5000
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec

from conflict.catalog import PricePolicy
from conflict.errors import ConflictError
from conflict.state import DEFAULT_WINDOW_MS, StoreState
from core.errors import StorageError

__all__ = [
    "OversellPolicy",
    "Policies",
    "PolicyError",
    "check_against_state",
    "from_state",
    "load_policies",
    "state_fold",
]

OversellPolicy = Literal["allow_and_report", "flag_recount"]


class PolicyError(ConflictError):
    """A policies file that cannot be read or does not validate."""


class Policies(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    price: PricePolicy = "latest"
    oversell: OversellPolicy = "allow_and_report"
    concurrency_window_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)] = DEFAULT_WINDOW_MS


def load_policies(path: str | Path) -> Policies:
    """Policies from a `.toml` or `.json` file; unknown keys and bad values are errors."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"cannot read policies {p}: {e.strerror}") from e
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(f"policies {p}: not valid {p.suffix or 'TOML'}: {e}") from e
    try:
        return msgspec.convert(raw, Policies)
    except msgspec.ValidationError as e:
        raise PolicyError(f"policies {p}: {e}") from e


def _state_policy(conn: sqlite3.Connection) -> tuple[str, int] | None:
    try:
        row = conn.execute("SELECT value FROM st_config WHERE key = 'price_policy'").fetchone()
    except sqlite3.Error as e:
        raise StorageError("state", f"no conflict state tables: {e}") from e
    if row is None:
        return None
    policy, _, window = str(row[0]).partition("/")
    return policy, int(window or DEFAULT_WINDOW_MS)


def state_fold(conn: sqlite3.Connection) -> StoreState:
    """The fold configured as the replica's own (its price policy and window), so ops
    tools fold as the replica did; the default for a log with no state yet."""
    try:
        found = _state_policy(conn)
    except StorageError:
        found = None
    for known in get_args(PricePolicy):
        if found is not None and found[0] == known:
            return StoreState(known, found[1])
    return StoreState()


def from_state(conn: sqlite3.Connection, oversell: OversellPolicy = "allow_and_report") -> Policies:
    """The price policy and window the state was folded with (defaults if none recorded)."""
    found = _state_policy(conn)
    if found is None:
        return Policies(oversell=oversell)
    return msgspec.convert(
        {"price": found[0], "oversell": oversell, "concurrency_window_ms": found[1]}, Policies
    )


def check_against_state(conn: sqlite3.Connection, policies: Policies) -> str | None:
    """A warning if `policies` disagree with the fold's price policy, else None."""
    found = _state_policy(conn)
    if found is None or found == (policies.price, policies.concurrency_window_ms):
        return None
    return (
        f"policies say price={policies.price}/{policies.concurrency_window_ms}ms but the state "
        f"was folded with {found[0]}/{found[1]}ms: effective prices may differ"
    )
