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
