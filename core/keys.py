"""Which public key signs an origin's events at which seq: the site's pinned keys and the
rotations HQ authored (`key.rotated`), checked offline (`KeyRegistry`).

A replica's first key is pinned in site.json. A rotation makes a new key valid for that
origin from a seq on; the old one stays valid below it, so history signed before the
rotation still verifies. An event is checked against the key valid at its seq only: a
stolen old key cannot write past the rotation.

A signature made by a rotated key names it: the 64 signature bytes are followed by the
key's 6-byte tag (`key_tag`). A replica that meets a tag it does not know for that origin
cannot tell a forgery from a key HQ's rotation has not brought it yet, so the event is
held (`UnknownKey`) rather than refused; an untagged signature is always the first key's.

A site that ran before events were signed lists its replicas as having unsigned history
(`unsigned`): an unsigned event of such an origin is taken on the trust every event had
before, until its `log.signed` checkpoint (`core.bodies.LogSigned`) is known here. That
checkpoint's signature vouches, through the hash chain, for the history below it, and
from it on that origin's events must be signed (`checkpointed`). Key events and the
checkpoint itself are never taken unsigned.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import nacl.exceptions
import nacl.signing

from core.errors import SignatureError, UnknownKey, UnknownOrigin
from core.events import MAX_INT64, Event, KeyRevoked, KeyRotated, LogSigned

__all__ = ["SIGNATURE_BYTES", "TAG_BYTES", "KeyRegistry", "ValidKey", "key_id", "key_tag"]

SIGNATURE_BYTES = 64
TAG_BYTES = 6
# Types that exist only with signing: never taken on an unsigned history's trust.
SIGNED_ONLY_TYPES = frozenset({LogSigned.TYPE, KeyRevoked.TYPE, KeyRotated.TYPE})


def key_tag(key: bytes) -> bytes:
    """The 6 bytes naming a public key after a rotated key's signature."""
    return hashlib.blake2b(key, digest_size=TAG_BYTES).digest()


def key_id(key: bytes) -> str:
    """A short name for a public key in messages: its tag in hex (12 digits)."""
    return key_tag(key).hex()


class ValidKey(NamedTuple):
    """A public key of an origin, valid from seq `from_seq` until the next one's."""

    from_seq: int
    key: bytes
    verify_key: nacl.signing.VerifyKey


class KeyRegistry:
    """Every origin's keys over its seqs; verifies events offline. Immutable: a rotation
    makes a new registry (`rotated`), so a check running beside a commit sees one whole."""

    def __init__(
        self,
        keys: Mapping[str, bytes],
        rotations: Mapping[str, Sequence[tuple[int, bytes]]] | None = None,
        unsigned: Iterable[str] = (),
    ) -> None:
        self._unsigned = frozenset(unsigned)  # origins with history from before signing
        self._history: dict[str, tuple[ValidKey, ...]] = {
            origin: (ValidKey(1, k, nacl.signing.VerifyKey(k)),) for origin, k in keys.items()
        }
        for origin, steps in (rotations or {}).items():
            for from_seq, key in steps:
                self._history[origin] = _rotate(self._history.get(origin, ()), from_seq, key)

    def __contains__(self, origin: object) -> bool:
        return origin in self._history

    def key_of(self, origin: str, seq: int = MAX_INT64) -> bytes | None:
        """The key valid for `origin` at `seq` (its newest by default), None if none."""
        valid = self._valid(origin, seq)
        return valid.key if valid is not None else None

    def keys_of(self, origin: str) -> list[tuple[int, bytes]]:
        """(from_seq, key) of each of `origin`'s keys, oldest first."""
        return [(v.from_seq, v.key) for v in self._history.get(origin, ())]

    def rotated(self, origin: str, from_seq: int, key: bytes) -> KeyRegistry:
        """A registry where `key` signs `origin`'s events from `from_seq` on. The newest
        rotation wins: any step at or past `from_seq` is replaced (HQ's events come in
        HQ's order, so every replica ends with the same history)."""
        new = KeyRegistry({}, unsigned=self._unsigned)
        new._history = dict(self._history)
        new._history[origin] = _rotate(self._history.get(origin, ()), from_seq, key)
        return new

    def trusts_unsigned(self, origin: str) -> bool:
        """Whether `origin`'s unsigned events are still taken: history from before
        signing, and its `log.signed` checkpoint not known yet."""
        return origin in self._unsigned

    def checkpointed(self, origin: str) -> KeyRegistry:
        """A registry where `origin`'s events must be signed: its checkpoint is known."""
        if origin not in self._unsigned:
            return self
        new = KeyRegistry({}, unsigned=self._unsigned - {origin})
        new._history = self._history
        return new

    def _valid(self, origin: str, seq: int) -> ValidKey | None:
        found = None
        for valid in self._history.get(origin, ()):
            if valid.from_seq > seq:
                break
            found = valid
        return found

    def verify(self, ev: Event, digest: bytes) -> None:
        if ev.origin not in self._history:
            raise UnknownOrigin(ev.origin, ev.seq)
        if not ev.sig and ev.origin in self._unsigned and ev.type not in SIGNED_ONLY_TYPES:
            return  # history from before signing, on trust until its checkpoint
        valid = self._valid(ev.origin, ev.seq)
        if valid is None:  # a rotation from seq 1 replaced every key: cannot happen
            raise UnknownOrigin(ev.origin, ev.seq)
        kid = key_id(valid.key)
        signature = ev.sig[:SIGNATURE_BYTES]
        if len(ev.sig) == SIGNATURE_BYTES + TAG_BYTES:
            self._check_tag(ev, ev.sig[SIGNATURE_BYTES:], valid)
        elif len(ev.sig) != SIGNATURE_BYTES:
            reason = "unsigned" if not ev.sig else f"a {len(ev.sig)}-byte signature"
            raise SignatureError(ev.origin, ev.seq, reason, kid)
        try:
            valid.verify_key.verify(digest, signature)
        except nacl.exceptions.BadSignatureError:
            raise SignatureError(ev.origin, ev.seq, "signature does not verify", kid) from None

    def _check_tag(self, ev: Event, tag: bytes, valid: ValidKey) -> None:
        if tag == key_tag(valid.key):
            return
        if any(tag == key_tag(v.key) for v in self._history[ev.origin]):
            reason = f"signed by key {tag.hex()}, which is not {ev.origin}'s at this seq"
            raise SignatureError(ev.origin, ev.seq, reason, key_id(valid.key))
        raise UnknownKey(ev.origin, ev.seq, tag.hex())


def _rotate(history: tuple[ValidKey, ...], from_seq: int, key: bytes) -> tuple[ValidKey, ...]:
    kept = tuple(v for v in history if v.from_seq < from_seq)
    return (*kept, ValidKey(from_seq, key, nacl.signing.VerifyKey(key)))
