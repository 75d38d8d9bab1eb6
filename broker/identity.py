"""Per-replica nkey identities: the NATS way to name a user without a password.

An nkey is an ed25519 key pair in NATS's encoding: the *seed* (``SU...``) is the
private half and stays on the machine that uses it, in a 0600 file; the *public
key* (``U...``) is all a server config holds. On connect the server sends a nonce,
the client signs it with its seed, and the server checks the signature against
the public keys it knows, so a stolen server config grants nothing.

Keys of an identity map are replica ids (``hq``, ``s1/t1``). A till's one key is
its client user on its store's servers and its leaf user at HQ, so no two machines
share a seed (`broker.keyring`). Routes have no nkey: they authenticate by mutual
TLS with the site CA (`broker.tls`).

`nkeys` (the NATS library nats-py uses for the same signature) does the
encoding; it checks neither the checksum nor the key kind, so `Nkey.from_seed`
and `check_public_key` do, to turn a mistyped key into an error at config time
rather than a refused connection at run time.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nkeys  # type: ignore[import-untyped]  # the library ships no type hints

from broker.errors import CredentialsError, IdentityError
from broker.files import write_private
from broker.subjects import HQ, validate_name

__all__ = [
    "Nkey",
    "check_public_key",
    "generate_store_nkeys",
    "load_seed",
    "public_keys",
]

_SEED_BYTES = 32
# Decoded lengths: a public key is prefix + key + crc16; a seed has two prefix bytes.
_PUBLIC_LEN = 1 + _SEED_BYTES + 2
_SEED_LEN = 2 + _SEED_BYTES + 2


def _b32decode(text: str, what: str) -> bytes:
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise IdentityError(what, "not base32") from None


def _check_crc(raw: bytes, what: str) -> None:
    if bytes(nkeys.crc16_checksum(raw[:-2])) != raw[-2:]:
        raise IdentityError(what, "checksum does not match (mistyped or truncated?)")


def check_public_key(value: str) -> str:
    """Return ``value`` if it is a user public nkey (``U...``), else IdentityError."""
    raw = _b32decode(value, "public key")
    if len(raw) != _PUBLIC_LEN or raw[0] != nkeys.PREFIX_BYTE_USER:
        raise IdentityError("public key", "not a user nkey (U + 55 base32 characters)")
    _check_crc(raw, "public key")
    return value


@dataclass(frozen=True, slots=True)
class Nkey:
    """A user nkey pair. ``seed`` is the secret; it never appears in a repr."""

    public_key: str
    seed: str = field(repr=False)

    @classmethod
    def generate(cls) -> Nkey:
        seed = nkeys.encode_seed(secrets.token_bytes(_SEED_BYTES), nkeys.PREFIX_BYTE_USER)
        return cls.from_seed(bytes(seed).decode("ascii"))

    @classmethod
    def from_seed(cls, seed: str) -> Nkey:
        """The pair of a user seed (``SU...``); IdentityError if it is not one."""
        seed = seed.strip()
        raw = _b32decode(seed, "seed")
        if len(raw) != _SEED_LEN:
            raise IdentityError("seed", "wrong length for an nkey seed")
        try:
            prefix, _ = nkeys.decode_seed(bytearray(seed.encode("ascii")))
        except nkeys.NkeysError as e:
            raise IdentityError("seed", f"not an nkey seed ({type(e).__name__})") from None
        if prefix != nkeys.PREFIX_BYTE_USER:
            raise IdentityError("seed", "not a *user* seed (SU...)")
        _check_crc(raw, "seed")
        pair = nkeys.from_seed(bytearray(seed.encode("ascii")))
        public = bytes(pair.public_key).decode("ascii")
        pair.wipe()
        return cls(public_key=public, seed=seed)

    def save_seed(self, path: Path) -> None:
        """Write the seed alone, 0600: the file format nats-py's ``nkeys_seed`` reads."""
        write_private(path, self.seed.encode("ascii") + b"\n")


def load_seed(path: Path) -> Nkey:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise CredentialsError(path, str(e)) from e
    try:
        return Nkey.from_seed(text)
    except IdentityError as e:
        raise CredentialsError(path, e.reason) from None


def generate_store_nkeys(store: str, tills: Iterable[str], hq: bool = True) -> dict[str, Nkey]:
    """Fresh nkeys for every till of ``store`` (plus HQ's own with ``hq=True``), keyed
    by replica id. No route or leaf keys: routes authenticate by mutual TLS, a till's
    leaf link with the till's own key."""
    validate_name(store, "store")
    keys = {f"{store}/{validate_name(till, 'till')}": Nkey.generate() for till in tills}
    if hq:
        keys[HQ] = Nkey.generate()
    return keys


def public_keys(keys: Mapping[str, Nkey]) -> dict[str, str]:
    """The public halves only: what a server config (and HQ) may hold."""
    return {k: v.public_key for k, v in keys.items()}
