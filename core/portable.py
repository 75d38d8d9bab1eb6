"""A portable, verified file of events: how a store ships its sales on a USB stick.

Layout (one file, written atomically: temp file, fsync, rename):

    MAGIC                 16 bytes  b"TILLMESH-EXPORT\\n"
    header length          4 bytes  big-endian unsigned
    header                 msgpack  `ExportHeader`
    content                count x (4-byte big-endian length + canonical envelope bytes)

`header.digest` is the blake2b-256 of the content bytes, `header.count` and
`header.content_bytes` their size; a file whose content does not match is refused
with `ExportDigestMismatch`, before any event reaches a log. The envelopes are the
log's stored bytes, unchanged, so the importing log checks chains, equivocation and
scope exactly as for events from the network.

Each origin is exported as a contiguous run up to its head (from its first kept
event, or from the first event at or after `--since`), so an importer holding the
earlier events applies them without gaps.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from core import segments
from core.errors import StorageError
from core.vv import SeqRange

__all__ = [
    "FORMAT",
    "MAGIC",
    "VERSION",
    "ExportDigestMismatch",
    "ExportError",
    "ExportHeader",
    "OriginDiff",
    "compare_logs",
    "read_export",
    "select_ranges",
    "write_export",
]

MAGIC = b"TILLMESH-EXPORT\n"
FORMAT = "tillmesh-export"
VERSION = 1
MAX_HEADER_BYTES = 16 * 1024 * 1024
_LEN = struct.Struct(">I")
CHUNK = 2000


class ExportError(StorageError):
    """The file is not a usable tillmesh export."""


class ExportDigestMismatch(ExportError):
    """The content is not what the header says: damaged or tampered with."""

    def __init__(self, path: str, expected: str, found: str) -> None:
        super().__init__(
            path, f"content digest {found[:16]}... does not match header {expected[:16]}..."
        )
        self.expected = expected
        self.found = found


class ExportHeader(msgspec.Struct, frozen=True, kw_only=True):
    format: str = FORMAT
    version: int = VERSION
    source: str  # replica id of the database exported
    created_ms: int
    vv: dict[str, int]  # the source's version vector at export time
    ranges: list[tuple[str, int, int]]  # (origin, first, last) exported, inclusive
    since_hlc: int | None = None
    count: int
    content_bytes: int
    digest: str  # blake2b-256 of the content, hex


_header_decoder = msgspec.msgpack.Decoder(ExportHeader)
_encoder = msgspec.msgpack.Encoder()


def select_ranges(
    conn: sqlite3.Connection, origins: Iterable[str] | None = None, since_hlc: int | None = None
) -> list[SeqRange]:
    """Per origin held, the contiguous run to export: to the head, from base+1 or `since`."""
    heads = {o: (s, b) for o, s, b in conn.execute("SELECT origin, seq, base FROM heads")}
    wanted = sorted(heads) if origins is None else sorted(set(origins) & heads.keys())
    ranges = []
    for origin in wanted:
        last, base = heads[origin]
        first = base + 1
        if since_hlc is not None:
            since = segments.first_seq_since(conn, origin, since_hlc)
            if since is None:
                continue
            first = since
        if first <= last:
            ranges.append((origin, first, last))
    return ranges


def _raws(conn: sqlite3.Connection, ranges: Iterable[SeqRange]) -> Iterator[bytes]:
    for origin, first, last in ranges:
        yield from (row[6] for row in segments.rows(conn, origin, first - 1, last))


def write_export(
    conn: sqlite3.Connection,
    path: Path,
    *,
    source: str,
    created_ms: int,
    ranges: list[SeqRange],
    since_hlc: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportHeader:
    """Write the events of `ranges` to `path`; returns the header written."""
    vv = dict(conn.execute("SELECT origin, seq FROM heads").fetchall())
    content, count = bytearray(), 0
    for raw in _raws(conn, ranges):
        content += _LEN.pack(len(raw))
        content += raw
        count += 1
        if progress is not None and count % CHUNK == 0:
            progress(CHUNK)
    header = ExportHeader(
        source=source, created_ms=created_ms, vv=vv, ranges=ranges, since_hlc=since_hlc,
        count=count, content_bytes=len(content), digest=_digest(bytes(content)),
    )  # fmt: skip
    encoded = _encoder.encode(header)
    _write_atomically(path, [MAGIC, _LEN.pack(len(encoded)), encoded, bytes(content)])
    return header


def _write_atomically(path: Path, parts: list[bytes]) -> None:
    tmp = path.with_name(path.name + ".partial")
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(str(path), e.strerror or str(e)) from e


def _digest(content: bytes) -> str:
    return hashlib.blake2b(content, digest_size=32).hexdigest()


def read_export(path: Path) -> tuple[ExportHeader, list[bytes]]:
    """Header and envelope bytes of an export file, refusing anything that does not check."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ExportError(str(path), e.strerror or str(e)) from e
    header, content = _split(str(path), data)
    found = _digest(content)
    if found != header.digest:
        raise ExportDigestMismatch(str(path), header.digest, found)
    raws = _records(str(path), content)
    if len(raws) != header.count:
        raise ExportError(str(path), f"header says {header.count} events, file holds {len(raws)}")
    return header, raws


def _split(path: str, data: bytes) -> tuple[ExportHeader, bytes]:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LEN.size:
        raise ExportError(path, "not a tillmesh export file (bad magic)")
    (size,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    if size > MAX_HEADER_BYTES or start + size > len(data):
        raise ExportError(path, "truncated export header")
    try:
        header = _header_decoder.decode(data[start : start + size])
    except msgspec.DecodeError as e:  # ValidationError is a subclass
        raise ExportError(path, f"bad export header: {e}") from e
    if header.format != FORMAT or header.version > VERSION:
        raise ExportError(path, f"unsupported export {header.format!r} v{header.version}")
    content = data[start + size :]
    if len(content) != header.content_bytes:
        detail = f"content is {len(content)} bytes, header says {header.content_bytes}"
        raise ExportError(path, f"truncated or padded: {detail}")
    return header, content


def _records(path: str, content: bytes) -> list[bytes]:
    raws, pos = [], 0
    while pos < len(content):
        if pos + _LEN.size > len(content):
            raise ExportError(path, f"record header cut at byte {pos}")
        (size,) = _LEN.unpack_from(content, pos)
        pos += _LEN.size
        if pos + size > len(content):
            raise ExportError(path, f"record cut at byte {pos}")
        raws.append(content[pos : pos + size])
        pos += size
    return raws


# --- comparing two logs ------------------------------------------------------------------


@dataclass
class OriginDiff:
    """How two logs differ on one origin: what each lacks, and bytes they disagree on."""

    origin: str
    seq_a: int
    seq_b: int
    a_lacks: tuple[int, int] | None = None  # (first, last) B holds and A does not
    b_lacks: tuple[int, int] | None = None
    compared: tuple[int, int] | None = None  # common range whose hashes were compared
    # seqs whose bytes differ: from where the chains part to the common top (first 20)
    disagree: list[int] = field(default_factory=list)
    disagree_count: int = 0

    @property
    def differs(self) -> bool:
        return bool(self.a_lacks or self.b_lacks or self.disagree_count)


_Head = tuple[int, bytes, int]  # seq, hash, base


def compare_logs(
    a: sqlite3.Connection, b: sqlite3.Connection, scope: Callable[[str], bool]
) -> list[OriginDiff]:
    """Per origin in `scope` held by either log: missing ranges and hash disagreements."""
    sql = "SELECT origin, seq, hash, base FROM heads"
    heads_a = {o: (s, h, base) for o, s, h, base in a.execute(sql)}
    heads_b = {o: (s, h, base) for o, s, h, base in b.execute(sql)}
    origins = sorted(o for o in heads_a.keys() | heads_b.keys() if scope(o))
    none: _Head = (0, b"", 0)
    return [_compare_origin(a, b, o, heads_a.get(o, none), heads_b.get(o, none)) for o in origins]


def _compare_origin(
    a: sqlite3.Connection, b: sqlite3.Connection, origin: str, ha: _Head, hb: _Head
) -> OriginDiff:
    (seq_a, hash_a, base_a), (seq_b, hash_b, base_b) = ha, hb
    d = OriginDiff(origin, seq_a, seq_b)
    if seq_b > seq_a:
        d.a_lacks = (seq_a + 1, seq_b)
    if seq_a > seq_b:
        d.b_lacks = (seq_b + 1, seq_a)
    lo, top = max(base_a, base_b) + 1, min(seq_a, seq_b)
    if top < lo:
        return d
    d.compared = (lo, top)
    if seq_a == seq_b and hash_a == hash_b:
        return d  # equal heads: the hash chain makes every earlier event equal too
    top_a, top_b = _hash_at(a, origin, top), _hash_at(b, origin, top)
    if top_a is not None and top_a == top_b:
        return d  # the shorter log's head is in the longer one: same chain below it
    parted = _parting(a, b, origin, lo, top)
    d.disagree_count = top - parted + 1
    d.disagree = list(range(parted, min(top, parted + 19) + 1))
    return d


def _hash_at(conn: sqlite3.Connection, origin: str, seq: int) -> bytes | None:
    return segments.hash_at(conn, origin, seq)


def _parting(a: sqlite3.Connection, b: sqlite3.Connection, origin: str, lo: int, hi: int) -> int:
    """The first seq in [lo, hi] whose stored hashes differ, given that seq `hi`'s do.

    Each event names its predecessor's hash, so once two chains part they never meet
    again: equal hashes at a seq mean equal events up to it. Bisecting on that finds
    where they part in O(log n) lookups, not a read of the whole range.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        here = _hash_at(a, origin, mid)
        if here is not None and here == _hash_at(b, origin, mid):
            lo = mid + 1
        else:
            hi = mid
    return lo
