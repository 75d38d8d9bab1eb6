"""A replica's event-signing key on disk, in its identity folder: the seed it signs with
(`sign.seed`, 0600) and, once it rotated its key, the public keys it rotated to with the
seq each starts at (`sign.rotated.json`); during a rotation, the new seed (`sign.seed.next`).

A rotated key is made on the replica itself and never leaves it: only its public key
and seq go to HQ, whose `key.rotated` event vouches for them to every replica
(`core.keys`). Until then the replica's new events are held, not applied, elsewhere.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from broker.files import write_private
from core.errors import StorageError
from core.events import Event
from core.keys import SIGNATURE_BYTES, key_id, key_tag
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from core.sqlite import file_uri
from replicas.errors import RetiredSigningKey

__all__ = [
    "NEXT_SEED",
    "ROTATED_KEYS",
    "SIGNING_SEED",
    "check_not_retired",
    "finish_rotation",
    "load_signer",
    "own_head_on_disk",
    "rotated_keys",
    "write_rotated_key",
    "write_signing_key",
]

SIGNING_SEED = "sign.seed"  # in a replica's identity folder: hex of its ed25519 seed
NEXT_SEED = "sign.seed.next"  # a rotation's new seed until it is renamed over SIGNING_SEED
ROTATED_KEYS = "sign.rotated.json"  # [{"public_key": ..., "from_seq": n}, ...], oldest first


def write_signing_key(folder: Path, seed: bytes | None = None) -> str:
    """An event-signing key (`seed`, else a new one) in `folder` (SIGNING_SEED, 0600);
    its public key, as site.json lists it."""
    seed = seed or new_signing_seed()
    write_private(folder / SIGNING_SEED, seed.hex().encode() + b"\n")
    return encode_public_key(Ed25519Signer(seed).public_key)


def rotated_keys(folder: Path) -> dict[str, int]:
    """The public keys this replica rotated to, with the seq each signs from."""
    path = folder / ROTATED_KEYS
    try:
        steps = json.loads(path.read_text()) if path.exists() else []
        return {str(s["public_key"]): int(s["from_seq"]) for s in steps}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise StorageError(str(path), f"cannot read the rotated keys: {e}") from e


def write_rotated_key(folder: Path, seed: bytes, from_seq: int) -> str:
    """Make `seed` this replica's signing key from `from_seq` on. Three durable steps, so
    a crash between any two leaves a folder `finish_rotation` completes or rolls back:
    the new seed to NEXT_SEED, its public key onto the rotated list, then the seed
    renamed over SIGNING_SEED. (The list first would lose the new seed in a crash and
    leave the old one, which `check_not_retired` refuses: a till that cannot start.)"""
    public = encode_public_key(Ed25519Signer(seed).public_key)
    steps = [{"public_key": k, "from_seq": n} for k, n in rotated_keys(folder).items()]
    steps.append({"public_key": public, "from_seq": from_seq})
    _write_durably(folder / NEXT_SEED, seed.hex().encode() + b"\n")
    _replace(folder / ROTATED_KEYS, json.dumps(steps, indent=2).encode() + b"\n")
    _rename_durably(folder / NEXT_SEED, folder / SIGNING_SEED)
    return public


def finish_rotation(folder: Path, own_head: int) -> str | None:
    """Complete or roll back a rotation a crash interrupted, before the key is loaded;
    what was done, or None. `own_head` is the seq of this replica's newest event.

    NEXT_SEED whose key is on the rotated list: the rename was all that was left. One
    whose key is not: the crash came before the list, nothing signed with it, dropped.
    A newest rotated key whose seed is gone (a crash in a build that wrote the list
    first) is dropped while it signed nothing (it starts past `own_head`): the old seed,
    still on disk, signs on."""
    nxt, rotated = folder / NEXT_SEED, rotated_keys(folder)
    if nxt.exists():
        public = _public_of(nxt)
        if public is not None and public in rotated:
            _rename_durably(nxt, folder / SIGNING_SEED)
            return f"finished the rotation to {public}"
        nxt.unlink()
        _sync_dir(folder)
        return "dropped a new key that never reached the rotated list"
    if not rotated:
        return None
    newest = list(rotated)[-1]
    if _public_of(folder / SIGNING_SEED) == newest or rotated[newest] <= own_head:
        return None
    steps = [{"public_key": k, "from_seq": n} for k, n in rotated.items() if k != newest]
    _replace(folder / ROTATED_KEYS, json.dumps(steps, indent=2).encode() + b"\n")
    return f"dropped the rotation to {newest}: its seed was lost before it signed anything"


def own_head_on_disk(log_path: Path, replica_id: str) -> int:
    """The seq of `replica_id`'s newest event in the log file, read before the log opens
    (opening it needs the signing key `finish_rotation` settles); 0 for no log yet."""
    if not log_path.exists():
        return 0
    conn = sqlite3.connect(file_uri(log_path, mode="ro"), uri=True)
    try:
        found = conn.execute("SELECT seq FROM heads WHERE origin = ?", (replica_id,)).fetchone()
    except sqlite3.OperationalError:  # a file made before its tables
        return 0
    finally:
        conn.close()
    return int(found[0]) if found else 0


def _public_of(path: Path) -> str | None:
    try:
        return encode_public_key(Ed25519Signer(bytes.fromhex(path.read_text().strip())).public_key)
    except (OSError, ValueError):
        return None


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".new")
    _write_durably(tmp, data)
    _rename_durably(tmp, path)


def _write_durably(path: Path, data: bytes) -> None:
    write_private(path, data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _sync_dir(path.parent)


def _rename_durably(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    _sync_dir(dst.parent)


def _sync_dir(folder: Path) -> None:
    """A rename or a new file survives a power cut once its directory is synced."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_signer(folder: Path) -> Ed25519Signer:
    """This replica's event-signing key; StorageError naming the file if unusable. A key
    it rotated to names itself after each signature (`core.keys`)."""
    path = folder / SIGNING_SEED
    try:
        seed = bytes.fromhex(path.read_text().strip())
        signer = Ed25519Signer(seed)
    except OSError as e:
        raise StorageError(str(path), f"cannot read the signing key: {e.strerror or e}") from e
    except ValueError as e:
        raise StorageError(str(path), f"not a signing key: {e}") from e
    if encode_public_key(signer.public_key) in rotated_keys(folder):
        return Ed25519Signer(seed, tagged=True)
    return signer


def check_not_retired(
    replica_id: str, folder: Path, signer: Ed25519Signer, valid: bytes | None, head: Event | None
) -> None:
    """Refuse (RetiredSigningKey) a key this till rotated away from, before it signs: one
    older than the newest in its rotated list (an old bundle installed over the folder);
    not the key HQ's rotations in its log make valid for its next seq (`valid`), unless it
    is one it rotated to and HQ has not vouched for yet; or not the key that signed its
    own newest event (`head`) when that was a rotated key (its log restored elsewhere)."""
    mine = encode_public_key(signer.public_key)
    rotated = rotated_keys(folder)
    if rotated and mine != list(rotated)[-1]:
        newest = list(rotated)[-1]
        detail = f"this till rotated to {newest} from seq {rotated[newest]}"
        raise RetiredSigningKey(replica_id, key_id(signer.public_key), detail)
    if valid is not None and valid != signer.public_key and mine not in rotated:
        detail = f"HQ's rotation in the log makes {key_id(valid)} the valid key"
        raise RetiredSigningKey(replica_id, key_id(signer.public_key), detail)
    tag = head.sig[SIGNATURE_BYTES:] if head is not None else b""
    if tag and tag != key_tag(signer.public_key):
        detail = f"its own event {head.id if head else ''} is signed by key {tag.hex()}"
        raise RetiredSigningKey(replica_id, key_id(signer.public_key), detail)
