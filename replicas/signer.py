"""This replica's event-signing key at run time: the key its log opens with (finishing
an interrupted rotation), the refusal to sign with one it rotated away from, and the
rotation to a new key.

Split from `replicas.runtime`, whose `Replica` calls these; the key files themselves
(where they live, how a rotation is made crash-safe) are `replicas.keyfiles`'.
"""

from __future__ import annotations

import logging
from pathlib import Path

from broker.keyring import NodeIdentity
from core.errors import StorageError
from core.events import Event, decode_event
from core.log import EventLog
from core.signing import Ed25519Signer, KeyRegistry, encode_public_key, new_signing_seed
from replicas.keyfiles import (
    check_not_retired,
    finish_rotation,
    load_signer,
    own_head_on_disk,
    rotated_keys,
    write_rotated_key,
)
from replicas.site import Site

__all__ = ["check_signing_key", "open_signing", "rotate_signing_key"]

log = logging.getLogger(__name__)


def open_signing(
    site: Site, replica_id: str, identity: NodeIdentity, data_dir: Path
) -> tuple[Ed25519Signer | None, KeyRegistry | None]:
    """Our signing key and the site's registry; neither for a site made before
    events were signed (it says so: its events are accepted from any peer)."""
    if replica_id not in site.signing_keys:
        log.warning("%s: this site has no event-signing keys", replica_id)
        return None, None
    done = finish_rotation(identity.directory, own_head_on_disk(data_dir / "log.db", replica_id))
    if done:
        log.warning("%s: a key rotation was interrupted: %s", replica_id, done)
    signer, registry = load_signer(identity.directory), site.key_registry()
    rotated = encode_public_key(signer.public_key) in rotated_keys(identity.directory)
    if registry.key_of(replica_id) != signer.public_key and not rotated:
        raise StorageError(
            str(identity.directory),
            f"this signing key is not the one site.json names for {replica_id}:"
            " install this machine's bundle again",
        )
    return signer, registry


async def check_signing_key(event_log: EventLog, replica_id: str, key_dir: Path) -> None:
    """Never sign with a key this till rotated away from (`check_not_retired`)."""
    signer, registry = event_log.signer, event_log.verifier
    if not isinstance(signer, Ed25519Signer):
        return
    seq = event_log.head(replica_id)[0]
    valid = registry.key_of(replica_id, seq + 1) if isinstance(registry, KeyRegistry) else None
    head = await _own_event(event_log, replica_id, seq)
    check_not_retired(replica_id, key_dir, signer, valid, head)


async def rotate_signing_key(
    event_log: EventLog, replica_id: str, key_dir: Path
) -> tuple[str, int]:
    """A new signing key, made here, used from our next event on: its public key and
    that seq, for HQ's admin to vouch for (`POST /keys/{replica}/rotate` at HQ)."""
    if event_log.signer is None:
        raise StorageError(str(key_dir), "this site signs no events")
    seed = new_signing_seed()
    signer = Ed25519Signer(seed, tagged=True)
    from_seq = await event_log.switch_signer(signer, lambda n: write_rotated_key(key_dir, seed, n))
    log.warning("%s signs with a new key from seq %d: HQ must vouch for it",
                replica_id, from_seq)  # fmt: skip
    return encode_public_key(signer.public_key), from_seq


async def _own_event(event_log: EventLog, origin: str, seq: int) -> Event | None:
    """Our event `seq` as the log holds it (None: none, or compacted away). Through
    `read_range`, which every log has (HQ on PostgreSQL's too)."""
    raws = await event_log.read_range(origin, seq, 1) if seq > 0 else []
    event = decode_event(raws[0]) if raws else None
    return event if event is not None and event.seq == seq else None
