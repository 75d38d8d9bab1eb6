"""What a till asks of a card processor (`CardProcessor`), and the HTTP adapter for the
acquirer service (`acquirer.py`). A real processor's SDK plugs in as another class with
the same two methods.

An answer is the processor's word: approved (with its reference) or declined (with
why). Anything else - refused connection, timeout, a 5xx, a reply that does not parse -
is `ProcessorUnreachable`: the till could not get an answer, so a sale goes deferred
under the floor limits and a capture waits for the next try. The key makes a retry
safe: the processor answers a key it has seen with the answer it gave.
"""

from __future__ import annotations

from typing import Literal, Protocol

import httpx
import msgspec

from replicas.errors import ProcessorUnreachable

__all__ = ["CardAnswer", "CardAsk", "CardProcessor", "HttpAcquirer"]


class CardAsk(msgspec.Struct, frozen=True):
    """One payment as the processor sees it: never PAN, track data or CVV."""

    key: str  # idempotency key: the till's for an authorisation, the payment id to capture
    token: str
    last4: str
    amount: int
    terminal_ref: str = ""


class CardAnswer(msgspec.Struct, frozen=True):
    status: Literal["approved", "declined"]
    reference: str = ""
    reason: str = ""

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class CardProcessor(Protocol):
    async def authorise(self, ask: CardAsk) -> CardAnswer:
        """Approve or decline a payment now (online); `ProcessorUnreachable` if no answer."""
        ...

    async def capture(self, ask: CardAsk) -> CardAnswer:
        """Capture a payment the till approved offline; idempotent by `ask.key`."""
        ...

    async def aclose(self) -> None: ...


_decode_answer = msgspec.json.Decoder(CardAnswer).decode


class HttpAcquirer:
    """The acquirer service over HTTP (httpx), each call bounded by `timeout_s`."""

    def __init__(self, url: str, timeout_s: float = 3.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)

    async def authorise(self, ask: CardAsk) -> CardAnswer:
        return await self._ask("/v1/authorisations", ask)

    async def capture(self, ask: CardAsk) -> CardAnswer:
        return await self._ask("/v1/captures", ask)

    async def _ask(self, path: str, ask: CardAsk) -> CardAnswer:
        try:
            r = await self._http.post(path, content=msgspec.json.encode(ask),
                                      headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            raise ProcessorUnreachable(self.url, type(e).__name__) from e
        if r.status_code != 200:
            raise ProcessorUnreachable(self.url, f"HTTP {r.status_code}")
        try:
            return _decode_answer(r.content)  # unknown fields (key, replay) are ignored
        except msgspec.DecodeError as e:
            raise ProcessorUnreachable(self.url, "a reply that is not an answer") from e

    async def aclose(self) -> None:
        await self._http.aclose()
