"""The layout of a site as a person describes it: a TOML file naming the stores, their
tills and where each runs, read by `tillmesh site init --from FILE`, and `--host`.

The file, validated by pydantic (every error names its place in the file)::

    host = "127.0.0.1"            # optional: the address of replicas not given one

    [hq]
    host = "10.0.0.1"
    nodes = { hq2 = "10.0.0.2", hq3 = "10.0.0.3" }   # optional: more HQ hub nodes

    [uplinks.lte]                 # optional backup uplinks, tried in this order after
    hq = "172.16.0.1"             # the WAN: each hub node's address over that uplink
    hq2 = "172.16.0.2"

    [stores.s1]
    host = "10.0.1.1"             # optional: tills of s1 not given their own address
    tills = { t1 = "10.0.1.11", t2 = "10.0.1.12", t3 = "10.0.1.13" }

    [stores.s2]
    tills = ["t1", "t2"]          # names only: they run at the store's (or site's) host

`--host` takes the same in one argument each: `hq=10.0.0.1`, `s1/t1=10.0.1.11`, or a
store default `s1=10.0.1.1`; `--hq-node hq2=10.0.0.2` adds a hub node, `--uplink
lte:hq=172.16.0.1` a hub node's address over a backup uplink.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from broker.subjects import HQ, validate_name
from replicas.errors import SiteFileError
from replicas.site import check_address

__all__ = [
    "SiteLayout",
    "parse_host_args",
    "parse_hq_node_args",
    "parse_uplink_args",
    "read_site_file",
]


class _HqEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = None
    nodes: dict[str, str] = {}


class _StoreEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = None
    tills: list[str] | dict[str, str] = Field(min_length=1)


class _SiteFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    hq: _HqEntry = _HqEntry()
    stores: dict[str, _StoreEntry] = Field(min_length=1)
    uplinks: dict[str, dict[str, str]] = {}

    @field_validator("stores")
    @classmethod
    def _names(cls, stores: dict[str, _StoreEntry]) -> dict[str, _StoreEntry]:
        for store, entry in stores.items():
            validate_name(store, "store")
            for till in entry.tills:
                validate_name(till, "till")
        return stores


class SiteLayout(BaseModel):
    """What `init_site` needs: the stores, the default host, each replica's address."""

    stores: dict[str, list[str]]
    host: str = "127.0.0.1"
    hosts: dict[str, str] = {}  # replicas and HQ hub nodes -> address
    hq_nodes: list[str] = []
    uplinks: dict[str, dict[str, str]] = {}


def read_site_file(path: Path) -> SiteLayout:
    """The layout a site file describes; SiteFileError naming what is wrong and where."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SiteFileError(path, e.strerror or str(e)) from e
    except tomllib.TOMLDecodeError as e:
        raise SiteFileError(path, f"not valid TOML: {e}") from e
    try:
        described = _SiteFile.model_validate(raw)
        return _layout(described)
    except ValidationError as e:
        raise SiteFileError(path, _explain(e)) from e
    except ValueError as e:  # a name or an address
        raise SiteFileError(path, str(e)) from e


def _layout(f: _SiteFile) -> SiteLayout:
    check_address(f.host, "host")
    hosts: dict[str, str] = {}
    if f.hq.host is not None:
        hosts[HQ] = check_address(f.hq.host, "[hq] host")
    for node, address in f.hq.nodes.items():
        hosts[node] = check_address(address, f"[hq] nodes.{node}")
    stores: dict[str, list[str]] = {}
    for store, entry in f.stores.items():
        own = entry.tills if isinstance(entry.tills, dict) else dict.fromkeys(entry.tills, "")
        stores[store] = list(own)
        for till, address in own.items():
            chosen = address or entry.host
            if chosen:
                hosts[f"{store}/{till}"] = check_address(chosen, f"[stores.{store}] {till}")
    return SiteLayout(
        stores=stores, host=f.host, hosts=hosts, hq_nodes=list(f.hq.nodes), uplinks=f.uplinks
    )


def _explain(e: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in e.errors()
    )


def parse_host_args(args: Iterable[str], stores: dict[str, list[str]]) -> dict[str, str]:
    """`--host` values (`hq=ADDR`, `s1/t1=ADDR`, `s1=ADDR` for every till of s1) as a
    replica -> address map; ValueError for anything else."""
    hosts: dict[str, str] = {}
    store_defaults: dict[str, str] = {}
    for arg in args:
        name, sep, address = arg.partition("=")
        if not sep or not name or not address:
            raise ValueError(f"{arg!r}: expected REPLICA=ADDRESS, e.g. s1/t1=10.0.1.11")
        check_address(address, name)
        if name in stores:
            store_defaults[name] = address
        elif name == HQ or _is_till(name, stores):
            hosts[name] = address
        else:
            raise ValueError(f"{name}: not a store or replica of this site")
    for store, address in store_defaults.items():
        for till in stores[store]:
            hosts.setdefault(f"{store}/{till}", address)
    return hosts


def _is_till(name: str, stores: dict[str, list[str]]) -> bool:
    store, _, till = name.partition("/")
    return till in stores.get(store, [])


def parse_hq_node_args(args: Iterable[str]) -> dict[str, str]:
    """`--hq-node` values (`hq2=10.0.0.2`) as a node -> address map; ValueError else."""
    nodes: dict[str, str] = {}
    for arg in args:
        name, sep, address = arg.partition("=")
        if not sep or not name or not address:
            raise ValueError(f"{arg!r}: expected NODE=ADDRESS, e.g. hq2=10.0.0.2")
        nodes[validate_name(name, "HQ node")] = check_address(address, name)
    return nodes


def parse_uplink_args(args: Iterable[str]) -> dict[str, dict[str, str]]:
    """`--uplink` values (`lte:hq=172.16.0.1`) as uplink -> hub node -> address."""
    uplinks: dict[str, dict[str, str]] = {}
    for arg in args:
        head, sep, address = arg.partition("=")
        uplink, colon, node = head.partition(":")
        if not (sep and colon and uplink and node and address):
            raise ValueError(f"{arg!r}: expected UPLINK:NODE=ADDRESS, e.g. lte:hq=172.16.0.1")
        check_address(address, head)
        uplinks.setdefault(validate_name(uplink, "uplink"), {})[node] = address
    return uplinks
