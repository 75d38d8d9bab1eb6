"""HQ revokes a replica (`key.revoked`): what it wrote past the cut is kept and replicated
but never state, on every replica, whichever arrived first: the revocation or those
events. What it wrote before stays in every digest."""

from __future__ import annotations

from pathlib import Path

from conflict import queries
from conflict.state import StoreState
from core.errors import WrongAuthor
from core.events import Event, KeyRevoked, event_hash
from core.fold import FLAG_REVOKED
from core.log import EventLog
from tests.factories import cash_sale, chain

SALES = chain("s1/t2", [cash_sale(receipt=f"R{i}", price=100 + i) for i in range(12)])
(REVOKE,) = chain("hq", [KeyRevoked(replica="s1/t2", after_seq=5, reason="till stolen")])


async def _log(path: Path) -> EventLog:
    return await EventLog.open(path, "s1/t1", StoreState())


async def _state(log: EventLog) -> tuple[str, int, dict[str, int]]:
    def read(c):  # type: ignore[no-untyped-def]
        sales = c.execute("SELECT count(*) FROM st_sales WHERE origin = 's1/t2'").fetchone()[0]
        flagged = c.execute(f"SELECT count(*) FROM events WHERE flags & {FLAG_REVOKED}")
        return queries.state_digest(c), sales, {"revoked_rows": flagged.fetchone()[0]}

    return await log.read(read)


async def test_the_same_state_whichever_arrives_first(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as a, await _log(tmp_path / "b.db") as b:
        await a.ingest(SALES[:10], peer="s1/t2")  # a folded 1..10, then hears of the theft
        assert (await _state(a))[1] == 10
        await a.ingest([REVOKE], peer="hq")
        await a.ingest(SALES[10:], peer="s1/t2")
        await b.ingest([REVOKE], peer="hq")  # b knew first
        await b.ingest(SALES, peer="s1/t2")
        digest_a, sales_a, rows_a = await _state(a)
        digest_b, sales_b, rows_b = await _state(b)
        assert digest_a == digest_b and sales_a == sales_b == 5
        assert rows_a == rows_b == {"revoked_rows": 7}  # kept, replicated, not state
        assert a.version_vector()["s1/t2"] == b.version_vector()["s1/t2"] == 12


async def test_a_revocation_outlives_a_restart(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as log:
        await log.ingest([REVOKE, *SALES[:3]], peer="hq")
    async with await _log(tmp_path / "a.db") as log:
        await log.ingest(SALES[3:], peer="s1/t2")
        assert (await _state(log))[1] == 5


async def test_only_hq_revokes(tmp_path: Path) -> None:
    (forged,) = chain("s1/t3", [KeyRevoked(replica="s1/t2", after_seq=0)])
    async with await _log(tmp_path / "a.db") as log:
        result = await log.ingest([forged], peer="s1/t3")
        assert isinstance(result.rejected[0], WrongAuthor)
        await log.ingest(SALES, peer="s1/t2")
        assert (await _state(log))[1] == 12


def _next_hq(prev: Event, body: KeyRevoked) -> Event:
    (ev,) = chain("hq", [body], prev=event_hash(prev), first_seq=prev.seq + 1)
    return ev


async def test_a_later_revocation_only_moves_the_cut_back(tmp_path: Path) -> None:
    async with await _log(tmp_path / "a.db") as log:
        await log.ingest([REVOKE, *SALES], peer="hq")
        later = _next_hq(REVOKE, KeyRevoked(replica="s1/t2", after_seq=9))
        await log.ingest([later], peer="hq")  # a cut of 9 does not bring 6..9 back
        assert (await _state(log))[1] == 5
        earlier = _next_hq(later, KeyRevoked(replica="s1/t2", after_seq=2))
        await log.ingest([earlier], peer="hq")
        assert (await _state(log))[1] == 2
