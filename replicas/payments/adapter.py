"""What a till asks of a card processor (`CardProcessor`), and the HTTP adapter for the
acquirer service (`acquirer.py`). A real processor's SDK plugs in as another class with
the same two methods.

An answer is the processor's word: approved (with its reference) or declined (with
why). A 4xx is the processor refusing the request itself (a key reused for another
amount, a field it does not take): `ProcessorRefused`, an answer too, never a reason to
take a card offline. Only no answer - refused connection, timeout, a 5xx, a 200 that
does not parse - is `ProcessorUnreachable`: a sale goes deferred under the floor limits
and a capture waits for the next try. The key makes a retry safe: the processor
answers a key it has seen with the answer it gave. No answer is not "not approved": a
reply lost after the processor approved leaves the card charged, so the payment taken
offline records the authorisation's key (`attempt`) and its capture names it; the
processor answers with the decision it made then, and the card is charged once.

`KEY_MAX` and `TERMINAL_REF_MAX` are what the acquirer takes; the till API's limits on
what goes into them (a reference, a receipt) fit inside.
"""

from __future__ import annotations

from typing import Literal, Protocol

import httpx
import msgspec

from replicas.errors import ProcessorRefused, ProcessorUnreachable

__all__ = [
    "KEY_MAX",
    "TERMINAL_REF_MAX",
    "CardAnswer",
    "CardAsk",
    "CardProcessor",
    "HttpAcquirer",
]

KEY_MAX = 256  # an idempotency key: "<till>|a|<hash>" (replicas.payments.keys.auth_key) fits
TERMINAL_REF_MAX = 200  # the till API's payment reference (models.Text)


class CardAsk(msgspec.Struct, frozen=True, omit_defaults=True):
    """One payment as the processor sees it: never PAN, track data or CVV."""

    key: str  # idempotency key: the till's for an authorisation, the payment id to capture
    token: str
    last4: str
    amount: int
    terminal_ref: str = ""
    # A capture's: the key of the authorisation that got no answer (`Payment.attempt`).
    # The processor may have approved it: it answers the capture with that decision
    # instead of charging the card again.
    attempt: str = ""


class CardAnswer(msgspec.Struct, frozen=True):
    status: Literal["approved", "declined", "reversed"]
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

    async def reverse(self, key: str) -> CardAnswer:
        """Undo the authorisation `key` (its sale was not stored): nothing is charged for
        it, and an authorisation under `key` still on its way is refused. Idempotent."""
        ...

    async def aclose(self) -> None: ...


class _Reversal(msgspec.Struct, frozen=True):
    key: str


_decode_answer = msgspec.json.Decoder(CardAnswer).decode


class HttpAcquirer:
    """The acquirer service over HTTP (httpx), each call bounded by `timeout_s` and
    carrying the merchant's `api_key`."""

    def __init__(self, url: str, timeout_s: float = 3.0, api_key: str = "") -> None:
        self.url = url.rstrip("/")
        auth = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s, headers=auth)

    async def authorise(self, ask: CardAsk) -> CardAnswer:
        return await self._ask("/v1/authorisations", ask)

    async def capture(self, ask: CardAsk) -> CardAnswer:
        return await self._ask("/v1/captures", ask)

    async def reverse(self, key: str) -> CardAnswer:
        return await self._ask("/v1/reversals", _Reversal(key))

    async def _ask(self, path: str, ask: CardAsk | _Reversal) -> CardAnswer:
        try:
            r = await self._http.post(path, content=msgspec.json.encode(ask),
                                      headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as e:
            raise ProcessorUnreachable(self.url, type(e).__name__) from e
        if r.status_code >= 500:
            raise ProcessorUnreachable(self.url, f"HTTP {r.status_code}")
        if r.status_code != 200:  # the processor's answer: it will not do this request
            raise ProcessorRefused(self.url, r.status_code, _detail(r))
        try:
            return _decode_answer(r.content)  # unknown fields (key, replay) are ignored
        except msgspec.DecodeError as e:
            raise ProcessorUnreachable(self.url, "a reply that is not an answer") from e

    async def aclose(self) -> None:
        await self._http.aclose()


def _detail(r: httpx.Response) -> str:
    """A refusal's `detail` (FastAPI's shape), short; the raw text if it has none."""
    try:
        detail = r.json().get("detail", r.text)
    except (ValueError, AttributeError):
        detail = r.text
    return str(detail)[:200]
