"""A revocation or a rotation that reaches events compaction folded into the snapshot.

The snapshot is one merged state, not one per origin: a rebuild cannot take sales 6..10
back out of it. Such a log must not quietly keep a state no other replica has: it keeps
every event (the revocation included), takes out what it still holds, and is marked
(`stale_snapshot`), which `log verify` reports as a defect, until it is restored from a
replica that still holds the events (HQ), which then has the one state all others have.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

from conflict import queries
from conflict.state import StoreState
from core.compact import compact
from core.events import Event, KeyRevoked, KeyRotated
from core.log import EventLog
from core.signing import encode_public_key
from core.verify import verify_log
from replicas.ops.restore import restore_db
from tests.core.rotation_kit import BEFORE, HQ_KEY, NEW, REGISTRY, STOLEN, T2, signed
from tests.factories import cash_sale, chain

SALES = chain(T2, [cash_sale(receipt=f"R{i}", price=100 + i) for i in range(12)])
(REVOKE,) = chain("hq", [KeyRevoked(replica=T2, after_seq=5, reason="till stolen")])


async def _fill(path: Path, events: list[Event], verified: bool = False) -> None:
    verifier = REGISTRY if verified else None
    async with await EventLog.open(path, "s1/t1", StoreState(), verifier=verifier) as log:
        await log.ingest(events, peer=T2)


def _compact(path: Path, floor: dict[str, int]) -> None:
    fold = StoreState()
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        compact(conn, fold, fold.tables, floor)


async def _after(path: Path, events: list[Event], verified: bool = False) -> tuple[int, str, dict]:
    verifier = REGISTRY if verified else None
    async with await EventLog.open(path, "s1/t1", StoreState(), verifier=verifier) as log:
        await log.ingest(events, peer="hq")
        sales, digest = await log.read(
            lambda c: (
                c.execute("SELECT count(*) FROM st_sales WHERE origin = ?", (T2,)).fetchone()[0],
                queries.state_digest(c),
            )
        )
        return sales, digest, dict(log.stale_snapshot)


def _verify_defects(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return [f"{f.kind} {f.origin}" for f in verify_log(conn).defects]


async def test_a_revocation_below_the_compacted_base_marks_the_log_for_restore(
    tmp_path: Path,
) -> None:
    whole, compacted = tmp_path / "whole.db", tmp_path / "compacted.db"
    for path in (whole, compacted):
        await _fill(path, SALES)
    _compact(compacted, {T2: 10})
    sales, digest, stale = await _after(whole, [REVOKE])
    assert (sales, stale) == (5, {})
    sales_c, digest_c, stale_c = await _after(compacted, [REVOKE])
    # 6..10 are in the snapshot: the log says so rather than serve a state of its own
    assert sales_c == 10 and digest_c != digest
    assert "s1/t2:6..10 revoked by HQ" in stale_c[T2] and "restore" in stale_c[T2]
    assert _verify_defects(compacted) == [f"stale-snapshot {T2}"]
    async with await EventLog.open(compacted, "s1/t1", StoreState()) as log:
        assert log.stale_snapshot == stale_c  # it outlives a restart
        assert log.version_vector() == {T2: 12, "hq": 1}  # nothing stored was dropped

    report = await restore_db(compacted, whole, "s1/t1", force=True)
    assert report.digest == digest
    assert (await _after(compacted, [])) == (5, digest, {})
    assert _verify_defects(compacted) == []


async def test_a_revocation_above_the_base_needs_no_restore(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    await _fill(path, SALES)
    _compact(path, {T2: 4})
    assert (await _after(path, [REVOKE]))[0::2] == (5, {})


async def test_old_key_events_compacted_before_the_rotation_mark_the_log(tmp_path: Path) -> None:
    (rotate,) = signed(
        chain("hq", [KeyRotated(replica=T2, public_key=encode_public_key(NEW.public_key),
                                from_seq=6, reason="key file copied")]),
        HQ_KEY,
    )  # fmt: skip
    path = tmp_path / "a.db"
    await _fill(path, BEFORE + STOLEN, verified=True)  # the thief's 6..8, folded
    _compact(path, {T2: 7})  # 6 and 7 now in the snapshot
    sales, _, stale = await _after(path, [rotate], verified=True)
    assert "s1/t2:6..7 signed by a key HQ retired from seq 6" in stale[T2]
    assert sales == 7  # 8 evicted as before; 6 and 7 cannot be
