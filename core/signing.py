"""Who wrote an event: every origin signs the hash of each event it appends (ed25519),
and every replica checks, offline, that an event was signed by its origin's key.

What a signature vouches for: `event_hash` covers the envelope but the signature,
`prev` included, so a valid signature on an origin's event vouches for that event and,
through the chain of `prev` hashes, for every event of that origin below it. A receiver
therefore verifies the newest event of each contiguous run of an origin it ingests and
checks that the run's hashes chain up to it (`vouch`): a catch-up of 100k events costs a
signature check per origin per slice, not 100k. An event no verified signature covers
(a run with a gap, a lone event) has its own checked.

The library is PyNaCl (libsodium), already installed for nkeys: measured here, ed25519
sign 17 µs and verify 45 µs, against 27 µs and 92 µs for `cryptography`'s; verify keys
are built once per key and cached by the registry (`core.keys`, which also says which key
is valid at which seq once HQ rotates one).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import NamedTuple, Protocol

import nacl.signing

from core.errors import SignatureError, TillmeshError
from core.events import Event, decode_event
from core.keys import SIGNATURE_BYTES, SIGNED_ONLY_TYPES, KeyRegistry, key_id, key_tag

__all__ = [
    "SIGNATURE_BYTES",
    "Ed25519Signer",
    "KeyRegistry",
    "Signer",
    "Verifier",
    "Vouched",
    "decode_public_key",
    "encode_public_key",
    "is_signed",
    "key_id",
    "new_signing_seed",
    "vouch",
]

SEED_BYTES = 32


class Signer(Protocol):
    """Signs the hashes of one origin's events (the log's own)."""

    def sign(self, digest: bytes) -> bytes: ...


class Verifier(Protocol):
    """Checks a signature of `origin` over an event hash; raises SignatureError."""

    def verify(self, ev: Event, digest: bytes) -> None: ...


def new_signing_seed() -> bytes:
    return bytes(nacl.signing.SigningKey.generate())


class Ed25519Signer:
    """A replica's signing key, from its 32-byte seed (kept 0600 in its identity folder).
    A `tagged` signer (a rotated key, `core.keys`) names its key after each signature."""

    def __init__(self, seed: bytes, *, tagged: bool = False) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"an ed25519 seed is {SEED_BYTES} bytes, not {len(seed)}")
        self._key = nacl.signing.SigningKey(seed)
        self.public_key = bytes(self._key.verify_key)
        self._tag = key_tag(self.public_key) if tagged else b""

    def __repr__(self) -> str:
        return f"Ed25519Signer(key {key_id(self.public_key)})"

    def sign(self, digest: bytes) -> bytes:
        return bytes(self._key.sign(digest).signature) + self._tag


def encode_public_key(key: bytes) -> str:
    """How a public key is written in site.json: unpadded base64url of its 32 bytes."""
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def decode_public_key(text: str) -> bytes:
    """The 32 bytes of a public key as `encode_public_key` wrote it; ValueError else."""
    try:
        key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as e:
        raise ValueError(f"not a base64url public key: {text[:20]!r}") from e
    if len(key) != SEED_BYTES:
        raise ValueError(f"a public key is {SEED_BYTES} bytes, this one {len(key)}")
    return key


class Vouched(NamedTuple):
    """What `vouch` found, by index in the run: refused (with why), covered (genuine by
    the chain, their own signature bytes unchecked), and trusted: taken unsigned, on an
    unsigned history's trust (`KeyRegistry.trusts_unsigned`), or covered by such one."""

    refused: dict[int, SignatureError]
    covered: set[int]
    trusted: set[int]


def vouch(run: Iterable[tuple[Event, bytes]], verifier: Verifier) -> Vouched:
    """Check the signatures of one origin's events (with their hashes) as cheaply as the
    chain allows.

    The newest event is verified; each event whose hash the verified one's `prev` names
    is covered, and so on down. What no verified signature covers is verified alone. An
    unsigned event taken on its history's trust covers nothing that must be signed
    (`SIGNED_ONLY_TYPES`: a checkpoint, a key event): that one is verified alone, so an
    unsigned one is refused even under an unsigned event chained to it.
    """
    items = list(run)
    order = sorted(range(len(items)), key=lambda i: items[i][0].seq, reverse=True)
    found = Vouched({}, set(), set())
    expected: bytes | None = None  # the hash the covered event below must have
    on_trust = False  # what vouches for the events below is an unsigned event
    for i in order:
        ev, digest = items[i]
        vouched = not (on_trust and ev.type in SIGNED_ONLY_TYPES)
        if expected is not None and digest == expected and vouched:
            found.covered.add(i)
            if on_trust:
                found.trusted.add(i)
            expected = ev.prev  # covered by the signature above: the chain goes on
            continue
        try:
            verifier.verify(ev, digest)
        except SignatureError as e:
            found.refused[i] = e.with_traceback(None)
            expected = None
            continue
        expected, on_trust = ev.prev, not ev.sig
        if on_trust:
            found.trusted.add(i)
    return found


def is_signed(raw: bytes) -> bool:
    """Whether stored envelope bytes carry a signature. A log keeps the signature of an
    event it verified and strips the unchecked bytes of one the chain covered, so in a
    log that checks signatures, signed means verified (`core.batch`). Bytes that are no
    envelope are not signed."""
    try:
        return bool(decode_event(raw).sig)
    except TillmeshError:
        return False
