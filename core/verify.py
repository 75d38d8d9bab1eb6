"""Offline verification of a log file: every defect, with its location.

Checks, per origin: seqs contiguous from the compaction base, each `prev` naming the
hash of the event before it, stored hashes matching the bytes, envelopes and bodies
canonically encoded, the head row matching the last event; with a key registry, that
each origin's events are its own writing: the newest event's signature is checked
against the origin's key (the chain vouches for the rest, `core.signing`); if it fails,
the highest event whose signature holds is searched for, and everything above it is a
defect naming origin, seqs and key. Held (pending) events and quarantined input are
reported as findings: they are not damage to the log, but ops must see them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from core import segments
from core.compact import stale_snapshot
from core.errors import SignatureError, TillmeshError, UnknownEventType
from core.events import (
    HQ,
    Event,
    KeyRotated,
    LogSigned,
    decode_body,
    decode_event,
    encode_event,
    event_hash,
)
from core.keys import KeyRegistry
from core.signing import Verifier, decode_public_key

__all__ = ["Equivocated", "Finding", "VerifyReport", "equivocations", "evidence", "verify_log"]

Severity = Literal["defect", "notice"]


@dataclass(frozen=True)
class Finding:
    severity: Severity
    kind: str
    origin: str
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"{self.severity:7} {self.kind:20} {self.origin}:{self.seq}  {self.detail}"


@dataclass
class VerifyReport:
    events: int = 0
    origins: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def defects(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "defect"]

    @property
    def ok(self) -> bool:
        return not self.defects


def verify_log(
    conn: sqlite3.Connection,
    progress: Callable[[int], None] | None = None,
    verifier: Verifier | None = None,
) -> VerifyReport:
    """Every defect of the log in `conn`; signatures too with a `verifier`."""
    report = VerifyReport()
    heads = {
        o: (s, h, b) for o, s, h, b in conn.execute("SELECT origin, seq, hash, base FROM heads")
    }
    report.origins = len(heads)
    if isinstance(verifier, KeyRegistry):
        verifier = _with_checkpoints(conn, _with_hq_rotations(conn, verifier))
    for origin in sorted(heads):
        seq, head_hash, base = heads[origin]
        last = _verify_origin(conn, origin, base, report, progress)
        if last != (seq, head_hash):
            report.findings.append(
                Finding(
                    "defect",
                    "head-mismatch",
                    origin,
                    seq,
                    f"head says {seq}, log ends at {last[0]}",
                )
            )
        if verifier is not None and seq > base:
            report.findings.extend(_check_signatures(conn, origin, seq, base, verifier))
        if isinstance(verifier, KeyRegistry) and verifier.trusts_unsigned(origin):
            detail = "history from before signing, no log.signed checkpoint here yet"
            report.findings.append(Finding("notice", "unsigned", origin, seq, detail))
    _orphans(conn, heads, report)
    _pending_and_quarantine(conn, report)
    for origin, why in stale_snapshot(conn).items():  # the state is not these events'
        report.findings.append(Finding("defect", "stale-snapshot", origin, 0, why))
    return report


def _with_hq_rotations(conn: sqlite3.Connection, registry: KeyRegistry) -> KeyRegistry:
    """The site's keys and the rotations HQ's events in this file make (in HQ's order):
    read from the events themselves, which this check verifies as HQ's, not from the
    log's meta, which nothing signs."""
    rows = conn.execute(
        "SELECT raw FROM events WHERE origin = ? AND type = ? ORDER BY seq", (HQ, KeyRotated.TYPE)
    )
    for (raw,) in rows:
        try:
            body = decode_body(decode_event(raw), check_text=False)
        except TillmeshError:
            continue  # reported where the chain is checked
        if isinstance(body, KeyRotated):
            key = decode_public_key(body.public_key)
            registry = registry.rotated(body.replica, body.from_seq, key)
    return registry


def _with_checkpoints(conn: sqlite3.Connection, registry: KeyRegistry) -> KeyRegistry:
    """Origins whose `log.signed` checkpoint is in this file must be signed from it on:
    the checkpoint is an event of theirs, never taken unsigned (`core.keys`)."""
    rows = conn.execute("SELECT DISTINCT origin FROM events WHERE type = ?", (LogSigned.TYPE,))
    for (origin,) in rows:
        registry = registry.checkpointed(origin)
    return registry


def _check_signatures(
    conn: sqlite3.Connection, origin: str, head: int, base: int, verifier: Verifier
) -> list[Finding]:
    """The head's signature vouches for the chain below it. If it fails, the highest
    event whose signature holds is searched for: everything above it is not the
    origin's writing (or not provably), one finding naming the range and the key."""
    first_error: SignatureError | None = None
    for seq in range(head, base, -1):
        ev = _event(conn, origin, seq)
        if ev is None:
            continue  # reported as a gap or undecodable already
        try:
            verifier.verify(ev, event_hash(ev))
        except SignatureError as e:
            first_error = first_error or e
            continue
        break
    else:
        seq = base
    if first_error is None:
        return []
    span = f"{seq + 1}..{head}" if seq + 1 < head else str(head)
    detail = f"events {span} not signed by {origin}'s key: {first_error.reason}"
    if first_error.key:
        detail += f" (key {first_error.key})"
    return [Finding("defect", "signature", origin, seq + 1, detail)]


def _event(conn: sqlite3.Connection, origin: str, seq: int) -> Event | None:
    raw = segments.raw_at(conn, origin, seq)
    try:
        return decode_event(raw) if raw is not None else None
    except TillmeshError:
        return None


def _verify_origin(
    conn: sqlite3.Connection,
    origin: str,
    base: int,
    report: VerifyReport,
    progress: Callable[[int], None] | None,
) -> tuple[int, bytes]:
    # prev_hash None: the first event's prev is checked by envelope rules only (at seq 1
    # it is empty; after compaction it names a dropped event).
    expected_seq, prev_hash = base + 1, None
    for seq, stored_hash, raw in _rows(conn, origin):
        found = _check_event(origin, seq, stored_hash, raw, expected_seq, prev_hash)
        report.findings.extend(found)
        report.events += 1
        if progress is not None and report.events % 10_000 == 0:
            progress(report.events)
        expected_seq, prev_hash = seq + 1, stored_hash
    return expected_seq - 1, prev_hash or b""


def _rows(conn: sqlite3.Connection, origin: str) -> Iterator[tuple[int, bytes, bytes]]:
    for row in segments.rows(conn, origin):
        yield row[1], row[5], row[6]


def _check_event(
    origin: str, seq: int, stored_hash: bytes, raw: bytes, expected_seq: int, prev: bytes | None
) -> list[Finding]:
    out: list[Finding] = []

    def defect(kind: str, detail: str) -> None:
        out.append(Finding("defect", kind, origin, seq, detail))

    if seq != expected_seq:
        defect("gap", f"expected seq {expected_seq}, found {seq}")
    try:
        ev = decode_event(raw)
    except TillmeshError as e:
        defect("undecodable", str(e))
        return out
    if (ev.origin, ev.seq) != (origin, seq):
        defect("misfiled", f"row {origin}:{seq} holds event {ev.id}")
    if encode_event(ev) != raw:
        defect("non-canonical", "envelope re-encodes to other bytes")
    if event_hash(ev) != stored_hash:
        defect("hash-mismatch", "stored hash does not match the event bytes")
    if prev is not None and seq == expected_seq and ev.prev != prev:
        defect("chain-broken", f"prev {ev.prev.hex()[:16]} != hash of {seq - 1}")
    out.extend(_check_body(ev))
    return out


def _check_body(ev: Event) -> list[Finding]:
    try:
        decode_body(ev)
    except UnknownEventType as e:
        return [Finding("notice", "unknown-type", ev.origin, ev.seq, str(e))]
    except TillmeshError as e:
        return [Finding("defect", "bad-body", ev.origin, ev.seq, str(e))]
    return []


def _orphans(
    conn: sqlite3.Connection, heads: dict[str, tuple[int, bytes, int]], report: VerifyReport
) -> None:
    for origin, count in conn.execute(
        "SELECT origin, sum(last_seq - first_seq + 1) FROM segments GROUP BY origin"
    ):
        if origin not in heads:
            report.findings.append(
                Finding("defect", "no-head", origin, 0, f"{count} events without a head row")
            )


def _pending_and_quarantine(conn: sqlite3.Connection, report: VerifyReport) -> None:
    for origin, lo, hi, n in conn.execute(
        "SELECT origin, min(seq), max(seq), count(*) FROM pending GROUP BY origin"
    ):
        detail = f"{n} events held ({lo}..{hi}) waiting for a gap to fill"
        report.findings.append(Finding("notice", "held", origin, lo, detail))
    for origin, seq, kind, detail, peer in conn.execute(
        "SELECT origin, seq, kind, detail, peer FROM quarantine ORDER BY id"
    ):
        report.findings.append(
            Finding("notice", f"quarantine:{kind}", origin, seq, f"from {peer or '?'}: {detail}")
        )


@dataclass(frozen=True)
class Equivocated:
    """Two versions of one (origin, seq), the second kept as evidence: proof the origin
    wrote both when the log checks signatures (a forged twin is a SignatureError)."""

    origin: str
    seq: int
    peer: str
    received_ms: int
    detail: str


def evidence(conn: sqlite3.Connection) -> dict[str, int]:
    """How many refused events the log keeps as evidence, by kind of refusal."""
    return dict(conn.execute("SELECT kind, count(*) FROM quarantine GROUP BY kind").fetchall())


def equivocations(conn: sqlite3.Connection) -> list[Equivocated]:
    rows = conn.execute(
        "SELECT origin, seq, peer, received_ms, detail FROM quarantine"
        " WHERE kind = 'Equivocation' ORDER BY id"
    ).fetchall()
    return [Equivocated(*row) for row in rows]
