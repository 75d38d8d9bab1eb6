"""A rogue on a running site's NATS (helpers, no tests): a raw client holding one
replica's credentials, and events forged to look like another origin's next one."""

from __future__ import annotations

import sqlite3

import msgspec
import nats
from nats.aio.client import Client

from broker.server import connect_options
from core.events import Body, Event, encode_event, event_hash
from core.signing import Ed25519Signer
from replicas.keyfiles import load_signer
from tests.e2e.harness import Mesh
from tests.factories import cash_sale, chain

__all__ = ["connect_as", "forged_next", "forged_next_event_of", "signing_key_of"]


async def connect_as(mesh: Mesh, who: str, server: str, errors: list[Exception]) -> Client:
    """A raw NATS client with `who`'s credentials, on `server`'s nats-server."""
    url = f"nats://{mesh.site.host}:{mesh.site.ports[server].nats}"
    seed = mesh.site.identity_dir(mesh.root, who) / "nkey.seed"
    options = connect_options(url, seed, who)

    async def on_error(e: Exception) -> None:
        errors.append(e)

    return await nats.connect(**options, error_cb=on_error, connect_timeout=5)


def signing_key_of(mesh: Mesh, who: str) -> Ed25519Signer:
    """`who`'s event-signing key, as its stolen disk gives it away."""
    return load_signer(mesh.site.identity_dir(mesh.root, who))


def forged_next(
    mesh: Mesh, origin: str, body: Body, key: Ed25519Signer | None = None, at: int | None = None
) -> Event:
    """`origin`'s next event as its own log holds it (or the one at seq `at`, an
    equivocating copy): correctly chained, signed with `key` if given."""
    db = mesh.site.data_dir(mesh.root, origin) / "log.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT seq, hash FROM heads WHERE origin = ?", (origin,)).fetchone()
        head, prev = row if row else (0, b"")
        seq = head + 1 if at is None else at
        if at is not None:
            (prev,) = conn.execute(
                "SELECT hash FROM events WHERE origin = ? AND seq = ?", (origin, at - 1)
            ).fetchone() or (b"",)
        hlc = conn.execute("SELECT coalesce(max(hlc), 65536) FROM events").fetchone()[0]
    finally:
        conn.close()
    (event,) = chain(origin, [body], hlc + 1, prev, seq)
    if key is not None:
        event = msgspec.structs.replace(event, sig=key.sign(event_hash(event)))
    return event


def forged_next_event_of(mesh: Mesh, origin: str, head: int) -> bytes:
    """A correctly chained, unsigned next event of `origin` after seq `head`."""
    return encode_event(forged_next(mesh, origin, cash_sale(receipt="FORGED"), at=head + 1))
