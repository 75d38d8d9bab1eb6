"""Regenerate the sample configs in deploy/nats/ from the real config code.

    python -m broker.samples deploy/nats

The samples are rendered by the same functions the runtime uses (the factories of
`broker.config`), so they cannot drift from what tillmesh runs; a test
re-renders them and compares, and another renders the same layout through a site
(`replicas.site.Site`) to show a deployed till writes the same conf.

The layout: HQ's hub on three machines (`hq`, where the HQ replica runs, `hq2`, `hq3`)
with a WAN address each and an address over a backup LTE uplink, and one till of a
store of three. Addresses are from the documentation ranges (RFC 5737) and 10/8.

Nothing in a sample can let anyone in, even if a sample were deployed as it is:

* Public keys are made up, not derived from any seed: `placeholder_key` spells
  ``EXAMPLEKEYOF...`` in the key's base32 and adds a valid checksum, so the key passes
  `check_public_key` and nats-server's own check, yet nobody holds its private half
  (finding it is as hard as breaking ed25519).
* The till's leaf seed, the one secret of a till's conf, is `LEAF_SEED_PLACEHOLDER`:
  plainly not a seed, so nats-server refuses the sample until a real one is put in.
  tillmesh writes the real conf itself, from the seed `site install` put on the till.
* TLS files are named where `tillmesh site install --data /var/lib/tillmesh` puts
  them; the samples hold no certificate or key.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import nkeys  # type: ignore[import-untyped]  # the library ships no type hints

from broker.config import (
    ServerConfig,
    hq_server_config,
    render_config,
    till_server_config,
)
from broker.identity import Nkey
from broker.keyring import node_files, route_files
from broker.subjects import HQ, parse_replica_id
from broker.tls import TlsFiles

__all__ = [
    "DATA",
    "HUBS",
    "LEAF_SEED_PLACEHOLDER",
    "LTE",
    "STORES",
    "TILL",
    "main",
    "placeholder_key",
    "sample_configs",
    "sample_public_keys",
]

DATA = Path("/var/lib/tillmesh")  # the data folder of deploy/systemd's units
HUBS = {HQ: "198.51.100.1", "hq2": "198.51.100.2", "hq3": "198.51.100.3"}  # over the WAN
LTE = {HQ: "203.0.113.1", "hq2": "203.0.113.2", "hq3": "203.0.113.3"}  # the backup uplink
STORES = {  # each till's address on its store's LAN
    "s1": {"t1": "10.0.1.11", "t2": "10.0.1.12", "t3": "10.0.1.13"},
    "s2": {"t1": "10.0.2.11", "t2": "10.0.2.12", "t3": "10.0.2.13"},
}
TILL = "s1/t1"  # the till whose conf is the sample
PORTS = {"nats": 4222, "cluster": 6222, "leaf": 7422, "monitor": 8222}
CLIENT_HOST = "127.0.0.1"  # client and monitoring ports: the machine's own processes
LEAF_SEED_PLACEHOLDER = f"<the seed in {DATA}/{TILL}/identity/nkey.seed>"

_DIGITS = ("ZERO", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")


def placeholder_key(label: str) -> str:
    """A well-formed user public nkey that reads ``UAEXAMPLEKEYOF<label>AAA...``.

    `label` is base32 text (A-Z, 2-7), at most 36 characters. Only the checksum is
    computed; the 32 key bytes are the spelled text, the public half of no known seed.
    """
    text = f"UAEXAMPLEKEYOF{label}"
    if len(text) > 50 or not set(label) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"):
        raise ValueError(f"{label!r}: not base32 text of at most 36 characters")
    raw = base64.b32decode(text.ljust(56, "A"))[:33]  # prefix byte + 32 key bytes
    return base64.b32encode(raw + bytes(nkeys.crc16_checksum(raw))).decode("ascii")


def _spelled(replica_id: str) -> str:
    """hq -> HQ, s1/t2 -> STOREONETILLTWO: base32 has no 0, 1, 8 or 9."""
    if replica_id == HQ:
        return "HQ"
    rid = parse_replica_id(replica_id)
    assert rid.store is not None and rid.till is not None
    return f"STORE{_words(rid.store.removeprefix('s'))}TILL{_words(rid.till.removeprefix('t'))}"


def _words(name: str) -> str:
    return "".join(_DIGITS[int(c)] if c.isdigit() else c.upper() for c in name)


def sample_public_keys() -> dict[str, str]:
    """Replica id -> placeholder public key, for HQ and every till of `STORES`."""
    ids = [HQ] + [f"{s}/{t}" for s, tills in STORES.items() for t in tills]
    return {rid: placeholder_key(_spelled(rid)) for rid in ids}


def _identity(node: str) -> TlsFiles:
    return node_files(DATA / node / "identity")


def route_identity(node: str) -> TlsFiles:
    """Its route certificate, from its cluster's own CA (`broker.keyring`)."""
    return route_files(DATA / node / "identity")


def _leaf_addrs() -> list[str]:
    """Every hub node over the WAN, then over LTE: the order a till tries them."""
    return [f"{a}:{PORTS['leaf']}" for a in (*HUBS.values(), *LTE.values())]


def _hub(node: str) -> ServerConfig:
    return hq_server_config(
        sample_public_keys(),
        list(STORES),
        _identity(node),
        name=node,
        port=PORTS["nats"],
        leaf_port=PORTS["leaf"],
        cluster_port=PORTS["cluster"],
        peer_cluster_addrs=[f"{a}:{PORTS['cluster']}" for n, a in HUBS.items() if n != node],
        http_port=PORTS["monitor"],
        host=CLIENT_HOST,
        network_host=HUBS[node],  # routes: HQ's own network
        leaf_host="0.0.0.0",  # stores reach it at its WAN and at its LTE address
        route_tls=route_identity(node),
    )


def _till() -> ServerConfig:
    keys = sample_public_keys()
    rid = parse_replica_id(TILL)
    assert rid.store is not None and rid.till is not None
    peers = [f"{a}:{PORTS['cluster']}" for t, a in STORES[rid.store].items() if t != rid.till]
    return till_server_config(
        rid.store,
        rid.till,
        keys,
        _identity(TILL),
        port=PORTS["nats"],
        cluster_port=PORTS["cluster"],
        peer_cluster_addrs=peers,
        hq_leaf_addrs=_leaf_addrs(),
        # Not validated by Nkey's constructor, on purpose: no seed goes into a sample.
        leaf_nkey=Nkey(public_key=keys[TILL], seed=LEAF_SEED_PLACEHOLDER),
        http_port=PORTS["monitor"],
        host=CLIENT_HOST,
        network_host=STORES[rid.store][rid.till],
        route_tls=route_identity(TILL),
    )


def sample_configs() -> dict[str, str]:
    """File name -> conf text for every sample in deploy/nats/ (named after the node)."""
    samples = {f"{node}.conf": render_config(_hub(node)) for node in HUBS}
    samples[f"{TILL.replace('/', '-')}.conf"] = render_config(_till())
    return samples


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "deploy/nats")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.conf"):  # a sample renamed or dropped must not linger
        stale.unlink()
    for name, text in sample_configs().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
