"""A small card acquirer, run as its own process: authorise, capture a stored offline
payment, and answer what it holds. For the demo and the tests, in place of a real
processor (whose SDK plugs into `adapter.CardProcessor` the same way).

Idempotent by key: an authorisation by the till's key, a capture by the payment id.
A reversal (`POST /v1/reversals`) undoes an authorisation whose sale the till did not
store: the card is not charged for it; one that comes before its authorisation takes
the key, and the late authorisation is refused (409).
A request seen before gets the stored answer back (`replay: true`) and counts as a
call, never as a second charge. A capture naming the authorisation that got the till
no answer (`attempt`) gets the decision made on it, if one was made: the card
approved then is not charged again (its record shares that authorisation's reference);
records live in SQLite (`acquirer.db`), so the count
survives a restart and is what the tests call the processor-side count.

Behaviour is configuration (`Behaviour`), never chance at request time: a payment is
declined when its token matches `decline_tokens`, its amount is over `decline_over`,
or `decline_rate` of payments picked by a hash of (seed, key); `slow_tokens` answer
after `slow_s` (a till's timeout); `PUT /admin/mode` switches the whole service to
`outage` (503) or back to `up`. Card data never comes here either: the terminal's
reference, the processor token, last 4 and the amount.

    tillmesh acquirer --data data/acquirer --port 8700 --decline-tokens 'decline'
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from replicas.payments.adapter import KEY_MAX, TERMINAL_REF_MAX

__all__ = ["Behaviour", "CaptureIn", "Ledger", "ReverseIn", "create_acquirer"]

Kind = Literal["authorise", "capture", "reverse"]
Status = Literal["approved", "declined", "reversed"]


class Behaviour(BaseModel):
    """When the acquirer declines, stalls or is down (set at start, mode at run time)."""

    decline_tokens: str = ""  # a regular expression searched in the token
    decline_over: int | None = None  # minor units
    decline_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    seed: int = 1
    slow_tokens: str = ""
    slow_s: float = 30.0
    mode: Literal["up", "outage"] = "up"

    def decline_reason(self, key: str, token: str, amount: int) -> str:
        """Why this payment is declined ('' if approved): a function of the request and
        the configuration only, so every ask about one payment gets one answer."""
        if self.decline_tokens and re.search(self.decline_tokens, token):
            return "do not honour"
        if self.decline_over is not None and amount > self.decline_over:
            return "insufficient funds"
        digest = hashlib.blake2b(f"{self.seed}/{key}".encode(), digest_size=8).digest()
        if int.from_bytes(digest) / 2**64 < self.decline_rate:
            return "card reported lost"
        return ""


_Token = Annotated[str, Field(min_length=8, max_length=128)]


class AskIn(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")
    key: Annotated[str, Field(min_length=1, max_length=KEY_MAX)]  # idempotency key
    token: _Token
    last4: Annotated[str, Field(pattern=r"^[0-9]{4}$")]
    amount: Annotated[int, Field(gt=0, le=10**12)]
    terminal_ref: Annotated[str, Field(max_length=TERMINAL_REF_MAX)] = ""


class CaptureIn(AskIn):
    """A payment the till approved offline and stored; `key` is the payment id, and
    `attempt` the key of its authorisation that got no answer, if one was sent."""

    attempt: Annotated[str, Field(max_length=KEY_MAX)] = ""


class Answer(BaseModel):
    key: str
    status: Status
    reference: str
    reason: str
    replay: bool = False


class ReverseIn(BaseModel):
    """An authorisation to undo: the till's sale was not stored after all."""

    model_config = ConfigDict(strict=True, extra="forbid")
    key: Annotated[str, Field(min_length=1, max_length=KEY_MAX)]


class ModeIn(BaseModel):
    mode: Literal["up", "outage"]


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  key TEXT PRIMARY KEY, kind TEXT NOT NULL, token TEXT NOT NULL, last4 TEXT NOT NULL,
  amount INTEGER NOT NULL, terminal_ref TEXT NOT NULL, status TEXT NOT NULL,
  reference TEXT NOT NULL, reason TEXT NOT NULL, calls INTEGER NOT NULL,
  attempt TEXT NOT NULL DEFAULT '', reversed INTEGER NOT NULL DEFAULT 0)
"""


class Ledger:
    """The acquirer's records, one per key, in SQLite (WAL; one writer thread at a time)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(_SCHEMA)
        columns = {row[1] for row in self.conn.execute("PRAGMA table_info(records)")}
        if "reversed" not in columns:  # a ledger from before reversals
            self.conn.execute("ALTER TABLE records ADD COLUMN reversed INTEGER NOT NULL DEFAULT 0")
        self.lock = threading.Lock()

    def decide(self, kind: Kind, ask: AskIn, behaviour: Behaviour) -> Answer:
        """The stored answer for `ask.key` (one more call), or a new one, stored."""
        return self._in_tx(lambda: self._decide(kind, ask, behaviour))

    def reverse(self, key: str) -> Answer:
        """Undo the authorisation `key`: nothing is charged for it. One the ledger has
        not seen yet (its request still on the way) is refused when it comes: the key
        is taken by the reversal. Idempotent: a second reversal is a replay."""
        return self._in_tx(lambda: self._reverse(key))

    def _in_tx(self, work: Callable[[], Answer]) -> Answer:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                answer = work()
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        return answer

    def _reverse(self, key: str) -> Answer:
        row = self.conn.execute(
            "SELECT kind, status, reference, reversed FROM records WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            number = self.conn.execute("SELECT COUNT(*) + 1 FROM records").fetchone()[0]
            reference, reason = f"R{number:08d}", "no authorisation under this key: none taken"
            self.conn.execute(
                "INSERT INTO records VALUES (?, 'reverse', '', '', 0, '', 'reversed', ?, ?, 1,"
                " '', 1)",
                (key, reference, reason),
            )
            return Answer(key=key, status="reversed", reference=reference, reason=reason)
        kind, status, reference, done = row
        if kind == "capture":
            raise HTTPException(409, f"key {key!r} is a capture, not an authorisation")
        self.conn.execute(
            "UPDATE records SET calls = calls + 1, reversed = 1 WHERE key = ?", (key,)
        )
        reason = "" if status == "approved" else f"it was {status}: nothing was charged"
        return Answer(key=key, status="reversed", reference=reference, reason=reason,
                      replay=bool(done))  # fmt: skip

    def _decide(self, kind: Kind, ask: AskIn, behaviour: Behaviour) -> Answer:
        row = self.conn.execute(
            "SELECT kind, amount, status, reference, reason, reversed FROM records WHERE key = ?",
            (ask.key,),
        ).fetchone()
        if row is not None:
            if row[0] == "reverse" or row[5]:  # never an approval for a sale given up
                raise HTTPException(409, f"key {ask.key!r} was reversed: the till gave it up")
            if (row[0], row[1]) != (kind, ask.amount):
                raise HTTPException(409, f"key {ask.key!r} was used for another request")
            self.conn.execute("UPDATE records SET calls = calls + 1 WHERE key = ?", (ask.key,))
            return Answer(key=ask.key, status=row[2], reference=row[3], reason=row[4], replay=True)
        attempt = ask.attempt if isinstance(ask, CaptureIn) else ""
        decided = self._decided(attempt, ask.amount) if attempt else None
        if decided is not None:  # the till never heard this decision: it stands, once
            status, reference, reason = decided
        else:
            reason = behaviour.decline_reason(ask.key, ask.token, ask.amount)
            number = self.conn.execute("SELECT COUNT(*) + 1 FROM records").fetchone()[0]
            reference = f"{'A' if kind == 'authorise' else 'C'}{number:08d}"
            status = "declined" if reason else "approved"
        self.conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, 0)",
            (ask.key, kind, ask.token, ask.last4, ask.amount, ask.terminal_ref, status,
             reference, reason, attempt),
        )  # fmt: skip
        return Answer(key=ask.key, status=status, reference=reference, reason=reason)

    def _decided(self, attempt: str, amount: int) -> tuple[Status, str, str] | None:
        """The decision on the authorisation `attempt` names, if this acquirer made one
        for that amount (a capture of another amount is a new request)."""
        row = self.conn.execute(
            "SELECT status, reference, reason FROM records WHERE key = ? AND kind = 'authorise'"
            " AND amount = ? AND reversed = 0",
            (attempt, amount),
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def records(self) -> list[dict[str, Any]]:
        with self.lock:
            cur = self.conn.execute(
                "SELECT key, kind, last4, amount, terminal_ref, status, reference, reason,"
                " calls, attempt, reversed FROM records ORDER BY key"
            )
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur]

    def close(self) -> None:
        self.conn.close()


def create_acquirer(ledger: Ledger, behaviour: Behaviour, api_key: str) -> FastAPI:
    """The acquirer's HTTP API over `ledger`: every call but `/healthz` carries
    `Authorization: Bearer <api_key>`, as a processor's API does (401 otherwise): a
    reversal or a capture from anyone on the network would move a merchant's money."""

    async def merchant(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise HTTPException(401, "the merchant's API key is missing or wrong",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    app = FastAPI(title="tillmesh demo acquirer", docs_url=None, redoc_url=None)
    keyed = [Depends(merchant)]

    in_flight = [0]  # requests received and not answered yet (`/healthz`)

    async def answer(kind: Kind, ask: AskIn, response: Response) -> Answer:
        slow = bool(behaviour.slow_tokens and re.search(behaviour.slow_tokens, ask.token))
        decide = functools.partial(ledger.decide, kind, ask, behaviour)
        in_flight[0] += 1
        try:
            return await recorded(decide, response, behaviour.slow_s if slow else 0.0)
        finally:
            in_flight[0] -= 1

    async def recorded(
        work: Callable[[], Answer], response: Response, after_s: float = 0.0
    ) -> Answer:
        """`work` on the ledger (off the loop) `after_s` seconds, unless in an outage;
        a replay says so."""
        if behaviour.mode == "outage":
            raise HTTPException(503, "acquirer unavailable")
        if after_s:
            await asyncio.sleep(after_s)
        out = await asyncio.to_thread(work)
        if out.replay:
            response.headers["Idempotent-Replay"] = "true"
        return out

    @app.get("/healthz")
    async def healthz() -> dict[str, str | int]:
        """Up or in an outage, and how many payments it is deciding right now (a slow
        token's, say): what a test waits for before it kills a till mid-request."""
        return {"mode": behaviour.mode, "in_flight": in_flight[0]}

    @app.post("/v1/authorisations", dependencies=keyed)
    async def authorise(ask: AskIn, response: Response) -> Answer:
        return await answer("authorise", ask, response)

    @app.post("/v1/captures", dependencies=keyed)
    async def capture(ask: CaptureIn, response: Response) -> Answer:
        return await answer("capture", ask, response)

    @app.post("/v1/reversals", dependencies=keyed)
    async def reverse(body: ReverseIn, response: Response) -> Answer:
        return await recorded(functools.partial(ledger.reverse, body.key), response)

    @app.get("/v1/records", dependencies=keyed)
    async def records() -> list[dict[str, Any]]:
        return await asyncio.to_thread(ledger.records)

    @app.put("/admin/mode", dependencies=keyed)
    async def set_mode(body: ModeIn) -> ModeIn:
        behaviour.mode = body.mode
        return body

    return app
