"""Regenerate the sample configs in deploy/nats/ from the real config code.

    python -m broker.samples deploy/nats

The samples are rendered by the same functions the runtime uses, so they cannot
drift from what tillmesh actually runs; a test re-renders them and compares.
Passwords are obvious placeholders: real deployments generate credentials with
`generate_store_credentials` and never commit them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from broker.config import hq_server_config, render_config, till_server_config
from broker.credentials import Credentials, leaf_key, route_key
from broker.subjects import HQ

__all__ = ["main", "sample_configs"]

_HQ_HOSTS = ("hq-1.example.net", "hq-2.example.net", "hq-3.example.net")
_STORES = ("s1", "s2")
_TILLS = ("t1", "t2", "t3")


def _placeholder(user: str) -> Credentials:
    return Credentials(user=user, password=f"CHANGE-ME-{user}")


def _sample_credentials() -> dict[str, Credentials]:
    creds = {HQ: _placeholder(HQ), route_key(HQ): _placeholder("route-hq")}
    for store in _STORES:
        creds[leaf_key(store)] = _placeholder(f"leaf-{store}")
        creds[route_key(store)] = _placeholder(f"route-{store}")
        for till in _TILLS:
            creds[f"{store}/{till}"] = _placeholder(f"{store}-{till}")
    return creds


def _hq_node(i: int, creds: dict[str, Credentials]) -> str:
    peers = [f"{h}:6222" for j, h in enumerate(_HQ_HOSTS) if j != i]
    cfg = hq_server_config(
        creds,
        _STORES,
        name=f"hq-{i + 1}",
        host="0.0.0.0",
        port=4222,
        leaf_port=7422,
        cluster_port=6222,
        peer_cluster_addrs=peers,
        http_port=8222,
    )
    return render_config(cfg)


def _till(creds: dict[str, Credentials]) -> str:
    cfg = till_server_config(
        "s1",
        "t1",
        creds,
        host="0.0.0.0",
        port=4222,
        cluster_port=6222,
        peer_cluster_addrs=["till-2.s1.lan:6222", "till-3.s1.lan:6222"],
        hq_leaf_addrs=[f"{h}:7422" for h in _HQ_HOSTS],
        http_port=8222,
    )
    return render_config(cfg)


def sample_configs() -> dict[str, str]:
    """File name -> conf text for every sample in deploy/nats/."""
    creds = _sample_credentials()
    samples = {f"hq-cluster-{i + 1}.conf": _hq_node(i, creds) for i in range(len(_HQ_HOSTS))}
    samples["till.conf"] = _till(creds)
    return samples


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "deploy/nats")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in sample_configs().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
