"""A till pushes each new sale to every peer, also to one a million events behind it
(catching up from it): the receiving log leaves such an event for its pulls to bring in
order, and the sync engine does not take the honest pusher for a hostile peer (before:
refused, a 'rejected' incident, a backoff of minutes, and the 1M catch-up stalled)."""

from __future__ import annotations

from pathlib import Path

from conflict.state import StoreState
from core.batch import MAX_HELD_AHEAD
from core.events import RawEvent, encode_event
from core.log import EventLog
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import EventsFrame, IngestOutcome
from tests.factories import cash_sale, chain
from tests.replicas.simnet import FAST

T2 = "s1/t2"


async def test_a_push_far_past_the_head_is_left_for_the_pulls_not_refused(
    tmp_path: Path,
) -> None:
    far, near = (
        chain(T2, [cash_sale(receipt=f"R{seq}")], prev=bytes(32), first_seq=seq)[0]
        for seq in (MAX_HELD_AHEAD + 2, MAX_HELD_AHEAD)
    )
    engine = SyncEngine("s1/t1", config=FAST)
    log = await EventLog.open(tmp_path / "log.db", "s1/t1", StoreState())
    try:
        frame = EventsFrame(T2, [encode_event(far)], False, 0)  # pushed, not a pull reply
        received = engine.admit(T2, frame, 0.0)
        result = await log.ingest(received, T2)
        assert (result.too_far, result.held, result.rejected, result.stored) == (1, 0, [], [])
        engine.on_frame(T2, frame, IngestOutcome.of(result, log.version_vector()), 0.1)
        assert engine.status(0.1).incidents == []  # before: "rejected", a hostile peer

        held = await log.ingest([RawEvent(near, encode_event(near))], T2)  # within reach
        assert (held.held, held.too_far, held.rejected) == (1, 0, [])
        pending = await log.read(lambda c: c.execute("SELECT seq FROM pending").fetchall())
        assert pending == [(MAX_HELD_AHEAD,)]
    finally:
        await log.close()


async def test_a_catch_up_behind_held_pushes_probes_pending_per_frame(tmp_path: Path) -> None:
    """While a till catches up from one that sells, the sales pushed ahead are held; the
    catch-up's frames then ask `pending` about once per frame, not twice per event, and
    the held sales are still applied when the catch-up reaches them."""
    events = chain(T2, [cash_sale(receipt=f"R{i}") for i in range(2100)])
    log = await EventLog.open(tmp_path / "log.db", "s1/t1", StoreState())
    probes: list[str] = []
    try:
        assert (await log.ingest(events[2050:], T2)).held == 50  # pushed: held
        assert log._writer_conn is not None
        log._writer_conn._conn.set_trace_callback(  # SQLite's own record of each statement
            lambda sql: probes.append(sql) if "FROM pending" in sql else None
        )
        result = await log.ingest(events[:2000], T2)  # a pull reply, below the held ones
        assert len(result.stored) == 2000 and not result.rejected
        assert len(probes) <= 5, f"{len(probes)} probes of pending for 2,000 events"
        log._writer_conn._conn.set_trace_callback(None)
        await log.ingest(events[2000:2050], T2)  # fills the gap: the held 50 are applied
        assert log.version_vector()[T2] == 2100
        left = await log.read(lambda c: c.execute("SELECT count(*) FROM pending").fetchone())
        assert left == (0,)
    finally:
        await log.close()
