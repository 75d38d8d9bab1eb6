"""Library behind the ops commands (`tillmesh log replay|export|import|diff|compact|...`).

Every function works on database files directly, never on the network. Read-only
ones open the file read-only (WAL lets them run beside a live replica); writers
(`import_file`, `compact_db`, `rebuild_db`, `restore_db`) want the replica stopped:
its in-memory chain heads would not see what they change.

State is always the real `StoreState` fold: replay and scoped diffs fold the chosen
events into a scratch database, which is valid because the fold depends only on the
set of events, never on their order.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

from tillmesh.conflict import queries, schema
from tillmesh.conflict.catalog import PricePolicy
from tillmesh.conflict.state import DEFAULT_WINDOW_MS, StoreState
from tillmesh.core import compact
from tillmesh.core.clock import system_wall_ms
from tillmesh.core.compact import CompactReport, fold_rows, load_snapshot, read_heads
from tillmesh.core.errors import StorageError, TillmeshError
from tillmesh.core.events import (
    HQ,
    Body,
    Event,
    RefundIssued,
    SaleCompleted,
    SaleVoided,
    StockAdjusted,
    StockCounted,
    StockReceived,
    decode_body,
    decode_event,
)
from tillmesh.core.fold import Accepted
from tillmesh.core.log import EventLog
from tillmesh.core.portable import (
    ExportHeader,
    OriginDiff,
    compare_logs,
    read_export,
    select_ranges,
    write_export,
)
from tillmesh.core.sqlite import open_sync, translate
from tillmesh.replicas.protocol import holds

__all__ = [
    "STATE_TABLES",
    "DbDiff",
    "ImportReport",
    "Replay",
    "ReplayStep",
    "RestoreReport",
    "StateDiff",
    "compact_db",
    "compaction_floor",
    "compaction_plan",
    "diff_dbs",
    "event_cut",
    "export_db",
    "fold_for",
    "import_file",
    "open_log",
    "rebuild_db",
    "replay",
    "replica_of",
    "restore_db",
    "scope_of",
    "scratch_state",
]

STATE_TABLES = tuple(schema.TABLES)
Progress = Callable[[int], None]
Scope = Callable[[str], bool]
Cut = tuple[int, str, int]  # (hlc, origin, seq): the total order replay cuts in


# --- opening ---------------------------------------------------------------------------


def open_log(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """A connection to an existing replica database, with a clear error if it is not one."""
    if not path.exists():
        raise StorageError(str(path), "no such database")
    conn = open_sync(path, readonly=not write)
    try:
        conn.execute("SELECT origin, seq, hash, base FROM heads LIMIT 1").fetchall()
        conn.execute("SELECT key, value FROM meta LIMIT 1").fetchall()
    except sqlite3.Error as e:
        conn.close()
        if "no such" in str(e):
            raise StorageError(str(path), "not a tillmesh log (no heads/meta table)") from e
        raise translate(path, e) from e
    return conn


def replica_of(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = 'replica_id'").fetchone()
    return str(row[0]) if row else None


def scope_of(replica_id: str | None) -> Scope:
    """Origins a replica holds; an unnamed database is taken to hold everything."""
    return holds(replica_id or HQ)


def fold_for(conn: sqlite3.Connection) -> StoreState:
    """The StoreState configured as the replica's own (price policy and window)."""
    try:
        row = conn.execute("SELECT value FROM st_config WHERE key = 'price_policy'").fetchone()
    except sqlite3.Error:
        row = None
    if row is None:
        return StoreState()
    policy, _, window = str(row[0]).partition("/")
    for known in get_args(PricePolicy):
        if policy == known:
            return StoreState(known, int(window or DEFAULT_WINDOW_MS))
    return StoreState()


# --- scratch state -----------------------------------------------------------------------


def scratch_state(
    conn: sqlite3.Connection, scope: Scope, cut: Cut | None = None
) -> sqlite3.Connection:
    """An in-memory database holding the state of the in-scope events up to `cut`."""
    fold = fold_for(conn)
    scratch = _new_scratch(conn, fold, scope, cut)
    rows = ((raw, flags) for raw, flags, _ in _cut_rows(conn, scope, cut))
    fold_rows(scratch, fold, rows)
    return scratch


def _new_scratch(
    conn: sqlite3.Connection, fold: StoreState, scope: Scope, cut: Cut | None
) -> sqlite3.Connection:
    scratch = sqlite3.connect(":memory:", isolation_level=None)
    fold.create_tables(scratch)
    if compact.has_snapshot(conn):
        _check_snapshot_usable(conn, scope, cut)
        load_snapshot(conn, scratch, STATE_TABLES)
    return scratch


def _check_snapshot_usable(conn: sqlite3.Connection, scope: Scope, cut: Cut | None) -> None:
    """A snapshot holds every origin's compacted events: usable only if the cut takes them all."""
    heads = read_heads(conn)
    outside = [o for o in heads if not scope(o)]
    if outside:
        detail = f"log is compacted; its snapshot cannot be limited to a scope ({outside[0]})"
        raise StorageError("snapshot", detail)
    for origin, head in heads.items():
        if head.base == 0 or cut is None:
            continue
        row = conn.execute(
            "SELECT hlc FROM events WHERE origin = ? AND seq = ?", (origin, head.base + 1)
        ).fetchone()
        if row is None or (row[0], origin, head.base + 1) > cut:
            raise StorageError(
                "replay",
                f"events of {origin} up to seq {head.base} were compacted away; "
                "replay this point on HQ's database",
            )


def _cut_rows(
    conn: sqlite3.Connection, scope: Scope, cut: Cut | None
) -> Iterator[tuple[bytes, int, int]]:
    where, params = ("WHERE (hlc, origin, seq) <= (?, ?, ?)", cut) if cut else ("", ())
    cursor = conn.execute(
        f"SELECT raw, flags, hlc, origin FROM events {where} ORDER BY hlc, origin, seq", params
    )
    while rows := cursor.fetchmany(2000):
        for raw, flags, hlc, origin in rows:
            if scope(origin):
                yield raw, flags, hlc


# --- replay --------------------------------------------------------------------------------


@dataclass
class ReplayStep:
    event: Event
    flags: int
    sales: int  # running count of sales folded so far
    gross: int  # running gross of those sales
    stock: dict[str, int]  # on hand after this event, for the SKUs it touched


@dataclass
class Replay:
    cut: Cut | None
    events: int = 0
    steps: list[ReplayStep] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def event_cut(conn: sqlite3.Connection, origin: str, seq: int) -> Cut:
    row = conn.execute(
        "SELECT hlc FROM events WHERE origin = ? AND seq = ?", (origin, seq)
    ).fetchone()
    if row is None:
        raise StorageError("replay", f"no event {origin}:{seq} in this log")
    return int(row[0]), origin, seq


def replay(
    conn: sqlite3.Connection,
    cut: Cut | None,
    scope: Scope,
    progress: Progress | None = None,
) -> Replay:
    """Fold the in-scope events up to `cut` one by one, recording running totals."""
    fold = fold_for(conn)
    scratch = _new_scratch(conn, fold, scope, cut)
    try:
        result = Replay(cut)
        summary = queries.sales_summary(scratch)
        sales, gross = summary.sales, summary.gross
        for raw, flags, _ in _cut_rows(conn, scope, cut):
            ev = decode_event(raw)
            body = _body_or_none(ev)
            if body is not None:
                fold.apply(scratch, [Accepted(ev, body, flags)])
                if isinstance(body, SaleCompleted):
                    sales, gross = sales + 1, gross + body.total
            stock = _stock(scratch, _touched_skus(scratch, body))
            result.steps.append(ReplayStep(ev, flags, sales, gross, stock))
            result.events += 1
            if progress is not None:
                progress(1)
        result.state = queries.state_snapshot(scratch)
        return result
    finally:
        scratch.close()


def _body_or_none(ev: Event) -> Body | None:
    try:
        return decode_body(ev)
    except TillmeshError:
        return None


def _touched_skus(conn: sqlite3.Connection, body: Body | None) -> list[str]:
    if isinstance(body, SaleCompleted):
        return sorted({line.sku for line in body.lines})
    if isinstance(body, SaleVoided | RefundIssued):
        rows = conn.execute(
            "SELECT DISTINCT sku FROM st_sale_lines WHERE sale_id = ? ORDER BY sku", (body.sale,)
        )
        return [sku for (sku,) in rows]
    if isinstance(body, StockReceived | StockAdjusted | StockCounted):
        return [body.sku]
    return []


def _stock(conn: sqlite3.Connection, skus: list[str]) -> dict[str, int]:
    if not skus:
        return {}
    marks = ",".join("?" * len(skus))
    found = dict(
        conn.execute(f"SELECT sku, on_hand FROM st_stock_levels WHERE sku IN ({marks})", skus)
    )
    return {sku: int(found.get(sku, 0)) for sku in skus}


# --- compaction --------------------------------------------------------------------------------


def compaction_floor(
    conn: sqlite3.Connection, vectors: Mapping[str, Mapping[str, int]]
) -> dict[str, int]:
    """Per origin, what every known replica holding it (HQ required) holds durably."""
    return compact.stable_floor(list(read_heads(conn)), vectors, holds, HQ)


def compaction_plan(
    conn: sqlite3.Connection, floor: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    heads = read_heads(conn)
    return {o: (heads[o].base, b) for o, b in compact.plan(heads, floor).items()}


def compact_db(
    conn: sqlite3.Connection,
    vectors: Mapping[str, Mapping[str, int]],
    progress: Progress | None = None,
) -> tuple[dict[str, int], CompactReport]:
    """Snapshot and drop what every known replica (HQ included) holds; returns floor, report."""
    floor = compaction_floor(conn, vectors)
    report = compact.compact(conn, fold_for(conn), STATE_TABLES, floor, progress)
    return floor, report


def rebuild_db(conn: sqlite3.Connection, progress: Progress | None = None) -> int:
    return compact.rebuild(conn, fold_for(conn), STATE_TABLES, progress)


# --- diff ----------------------------------------------------------------------------------------


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


# --- export / import -------------------------------------------------------------------------


def export_db(
    conn: sqlite3.Connection,
    out: Path,
    origin: str | None = None,
    since_hlc: int | None = None,
    progress: Progress | None = None,
) -> ExportHeader:
    """Write the log's events (all origins, or one; all, or from `since`) to a portable file."""
    conn.execute("BEGIN")  # one consistent snapshot beside a live writer
    try:
        ranges = select_ranges(conn, None if origin is None else [origin], since_hlc)
        return write_export(
            conn, out, source=replica_of(conn) or "?", created_ms=system_wall_ms(),
            ranges=ranges, since_hlc=since_hlc, progress=progress,
        )  # fmt: skip
    finally:
        conn.execute("COMMIT")


@dataclass
class ImportReport:
    source: str
    events: int  # in the file
    accepted: int = 0
    duplicates: int = 0
    held: int = 0
    out_of_scope: int = 0  # skipped: not replicated to this replica
    rejected: list[str] = field(default_factory=list)


async def import_file(
    file: Path, db: Path, replica_id: str, progress: Progress | None = None
) -> ImportReport:
    """Ingest a verified export into an existing replica's log (idempotent)."""
    header, raws = read_export(file)
    with closing(open_log(db)) as conn:
        fold = _fold_for_writing(conn)
    report = ImportReport(header.source, len(raws))
    scope = holds(replica_id)
    events = []
    for raw in raws:
        try:
            ev = decode_event(raw)
        except TillmeshError as e:
            report.rejected.append(str(e))
            continue
        if scope(ev.origin):
            events.append(ev)
        else:
            report.out_of_scope += 1
    async with await EventLog.open(db, replica_id, fold, in_scope=scope) as log:
        for i in range(0, len(events), 1000):
            result = await log.ingest(events[i : i + 1000], peer=f"import:{header.source}")
            report.accepted += len(result.accepted)
            report.duplicates += result.duplicates
            report.held += result.held
            report.rejected += [str(e) for e in result.rejected]
            if progress is not None:
                progress(len(events[i : i + 1000]))
    return report


def _fold_for_writing(conn: sqlite3.Connection) -> StoreState:
    """The fold to open an EventLog with, refusing one that would rebuild away a snapshot."""
    fold = fold_for(conn)
    row = conn.execute("SELECT value FROM meta WHERE key = 'fold_version'").fetchone()
    if compact.has_snapshot(conn) and (row is None or int(row[0]) != fold.version):
        raise StorageError(
            "log", "compacted log made by another fold version: opening it would lose history"
        )
    return fold


# --- restore -------------------------------------------------------------------------------------


@dataclass
class RestoreReport:
    replica_id: str
    source: str
    events: int = 0
    own_seq: int = 0  # the till's own head: its next append gets own_seq + 1
    seeded: dict[str, int] = field(default_factory=dict)  # origins started from a snapshot
    rejected: list[str] = field(default_factory=list)
    digest: str = ""


async def restore_db(
    target: Path, source: Path, replica_id: str, *, force: bool = False,
    progress: Progress | None = None,
) -> RestoreReport:  # fmt: skip
    """A replacement replica's database, from HQ's or a peer's, keeping the replica's id."""
    _check_target(target, force)
    tmp = target.with_name(target.name + ".restoring")
    with closing(open_log(source)) as src:
        report = RestoreReport(replica_id, replica_of(src) or HQ)
        _check_source(report.source, replica_id)
        fold = _fold_for_writing(src)
        _remove_db(tmp)
        try:
            await _build(src, tmp, fold, report, progress)
        except BaseException:
            _remove_db(tmp)
            raise
    _remove_db(target)
    os.replace(tmp, target)
    return report


def _check_target(target: Path, force: bool) -> None:
    if target.exists() and target.stat().st_size > 0 and not force:
        raise StorageError(str(target), "exists and is not empty; --force replaces it")


def _check_source(source_id: str, replica_id: str) -> None:
    if source_id != HQ and (replica_id == HQ or not holds(replica_id)(source_id)):
        detail = f"holds less than {replica_id!r}: restore from HQ or a till of the same store"
        raise StorageError(source_id, detail)


async def _build(
    src: sqlite3.Connection, tmp: Path, fold: StoreState, report: RestoreReport,
    progress: Progress | None,
) -> None:  # fmt: skip
    scope = holds(report.replica_id)
    heads = {o: h for o, h in read_heads(src).items() if scope(o)}
    compacted = [o for o, h in heads.items() if h.base]
    async with await EventLog.open(tmp, report.replica_id, fold, in_scope=scope):
        pass  # creates the schema and the state tables
    if compacted:
        if not _same_scope(report.source, report.replica_id):
            raise StorageError(
                report.source, f"compacted ({compacted[0]} and more); restore from HQ instead"
            )
        with closing(open_sync(tmp)) as dst:
            report.seeded = compact.seed_from(src, dst, STATE_TABLES, heads)
    async with await EventLog.open(tmp, report.replica_id, fold, in_scope=scope) as log:
        for origin, head in heads.items():
            for raws in _raw_chunks(src, origin, head.base + 1, head.seq):
                result = await log.ingest_raw(raws, peer=f"restore:{report.source}")
                report.events += len(result.accepted)
                report.rejected += [str(e) for e in result.rejected]
                if progress is not None:
                    progress(len(raws))
        report.own_seq = log.head(report.replica_id)[0]
    with closing(open_sync(tmp, readonly=True)) as conn:
        report.digest = queries.state_digest(conn)


def _same_scope(a: str, b: str) -> bool:
    return a == b == HQ or (HQ not in (a, b) and holds(a)(b))


def _raw_chunks(
    conn: sqlite3.Connection, origin: str, first: int, last: int
) -> Iterator[Sequence[bytes]]:
    cursor = conn.execute(
        "SELECT raw FROM events WHERE origin = ? AND seq BETWEEN ? AND ? ORDER BY seq",
        (origin, first, last),
    )
    while rows := cursor.fetchmany(2000):
        yield [raw for (raw,) in rows]


def _remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
