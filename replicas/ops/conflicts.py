"""Conflicts of a replica database, kept by the state they were found in.

`detect` is a pure function of the state tables and the policies, and the state digest
names the state in one read (`queries.state_digest`, kept by the fold's triggers). So
the conflicts found once are kept in `<log>.conflicts` under (state digest, policies,
the detection code): asked again of the same state they are read back, not found again.
A state that moved on (one more sale) misses, and is detected and kept anew; so does a
build whose detection code differs. `recompute=True` never reads the file, and replays
the stock history instead of reading the oversell runs the fold keeps.

The file is a cache: any failure to read it is a miss, any failure to write it (a
read-only folder, a full disk) leaves it out; the answer is the same either way.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sqlite3
from pathlib import Path

import msgspec

from conflict import conflicts, detect, detect_stock, oversold, queries
from conflict.detect import KINDS, Conflict
from conflict.policies import Policies

__all__ = ["cache_path", "find_conflicts", "kept_differs", "recompute_from_events"]


class _Kept(msgspec.Struct, frozen=True):
    key: str
    found: list[Conflict]


_CODE = hashlib.blake2b(
    "".join(inspect.getsource(m) for m in (detect, detect_stock, conflicts, oversold)).encode(),
    digest_size=16,
).hexdigest()


def cache_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".conflicts")


def _key(conn: sqlite3.Connection, policies: Policies) -> str:
    parts = [_CODE, queries.state_digest(conn), msgspec.json.encode(policies).decode()]
    return "\n".join(parts)


def find_conflicts(
    conn: sqlite3.Connection,
    policies: Policies,
    log_path: Path | None = None,
    *,
    recompute: bool = False,
) -> list[Conflict]:
    """Every conflict of the state (all kinds, resolved ones too), from the kept file
    when it was found in this very state, else detected (and kept, with `log_path`)."""
    if log_path is None:
        return detect.detect(conn, policies, kinds=KINDS, recompute=recompute)
    key = _key(conn, policies)
    path = cache_path(log_path)
    if not recompute:
        kept = _read(path)
        if kept is not None and kept.key == key:
            return kept.found
    found = detect.detect(conn, policies, kinds=KINDS, recompute=recompute)
    _write(path, _Kept(key, found))
    return found


def kept_differs(conn: sqlite3.Connection, policies: Policies, found: list[Conflict]) -> bool:
    """Whether the conflicts read from what the fold keeps (the oversell runs) differ
    from `found` by a full replay of the same state (`--recompute`)."""
    return detect.detect(conn, policies, kinds=KINDS) != found


def recompute_from_events(conn: sqlite3.Connection, policies: Policies) -> list[Conflict]:
    """The conflicts of the log's events folded afresh (a scratch state), for `--recompute`:
    what the kept state must agree with."""
    from replicas.ops.common import scope_of, scratch_state

    scratch = scratch_state(conn, scope_of(None))
    try:
        return detect.detect(scratch, policies, kinds=KINDS, recompute=True)
    finally:
        scratch.close()


def _read(path: Path) -> _Kept | None:
    try:
        return msgspec.msgpack.decode(path.read_bytes(), type=_Kept)
    except (OSError, msgspec.DecodeError):
        return None


def _write(path: Path, kept: _Kept) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # sales: owner only
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.msgpack.encode(kept))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
