"""A site's configuration: `site init` (where every node runs, its identity), `site
bundle` (one machine's share of it), `site install` (on that machine), and `site keys
--add` (signing keys for a site made before events were signed)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from broker.subjects import HQ
from replicas.bundle import install_bundle, write_bundle
from replicas.cli.common import add_command, add_group, check_args, positive_int
from replicas.errors import SiteFileError
from replicas.layout import (
    SiteLayout,
    parse_host_args,
    parse_hq_node_args,
    parse_uplink_args,
    read_site_file,
)
from replicas.site import Site, add_signing_keys, init_site, is_loopback, load_site

__all__ = ["register"]

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sites = add_group(
        sub,
        "site",
        "Create a site (stores, tills, HQ), and give each machine its share of it.",
        "tillmesh site init --data data --stores 2 --tills 3",
    )
    _register_init(sites)
    p = add_command(
        sites,
        "bundle",
        cmd_site_bundle,
        "Pack what one machine needs (the site, its own certificate and key) into a file.",
        "tillmesh site bundle --data site --replica s1/t1 --out s1-t1.tar.gz\n"
        "  tillmesh site bundle --data site --replica hq2 --out hq2.tar.gz   # a hub node",
    )
    p.add_argument("--data", type=Path, required=True, help="where `site init` wrote the site")
    p.add_argument("--replica", required=True, help="the machine: s1/t1, hq, or a hub node")
    p.add_argument("--out", type=Path, required=True, help="the bundle file to write (0600)")

    p = add_command(
        sites,
        "install",
        cmd_site_install,
        "Unpack a machine's bundle into its data folder, ready to run.",
        "tillmesh site install s1-t1.tar.gz --data /var/lib/tillmesh",
    )
    p.add_argument("bundle", type=Path, help="the file `site bundle` wrote for this machine")
    p.add_argument("--data", type=Path, required=True, help="this machine's data folder")
    p.add_argument("--force", action="store_true", help="replace the site installed there")
    _register_keys(sites)


def _register_keys(sites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sites,
        "keys",
        cmd_site_keys,
        "Add event-signing keys to a site made before events were signed, and write every"
        " machine's new bundle.",
        "tillmesh site keys --data site --add --bundles bundles",
    )
    p.add_argument("--data", type=Path, required=True, help="where `site init` wrote the site")
    p.add_argument(
        "--add",
        action="store_true",
        required=True,
        help="give each replica without a signing key one; their history so far stays as it"
        " is, vouched for by the checkpoint each writes on its first start with its key",
    )
    p.add_argument(
        "--bundles", type=Path, required=True, help="folder for every machine's new bundle"
    )


def _register_init(sites: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = add_command(
        sites,
        "init",
        cmd_site_init,
        "Write DATA/site.json (where each node runs, its ports, public keys), the site CA"
        " and every node's identity.",
        "tillmesh site init --data data --stores 2 --tills 3\n"
        "  tillmesh site init --data site --stores 1 --tills 2 --host hq=10.0.0.1"
        " --host s1/t1=10.0.1.11 --host s1/t2=10.0.1.12\n"
        "  tillmesh site init --data site --from site.toml   # see docs: a site file",
    )
    p.add_argument("--data", type=Path, required=True, help="the site's data folder")
    p.add_argument("--stores", type=positive_int, default=1, help="number of stores (s1, s2, ...)")
    p.add_argument("--tills", type=positive_int, default=3, help="tills per store (t1, t2, ...)")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="REPLICA=ADDRESS",
        help="where a replica runs (hq=..., s1/t1=..., or s1=... for every till of s1); a"
        " replica alone on its address uses the standard ports. Default: all on 127.0.0.1",
    )
    p.add_argument(
        "--hq-node",
        action="append",
        default=[],
        metavar="NODE=ADDRESS",
        help="another HQ hub node (e.g. hq2=10.0.0.2); stores reach HQ on any of them",
    )
    p.add_argument(
        "--uplink",
        action="append",
        default=[],
        metavar="UPLINK:NODE=ADDRESS",
        help="a hub node's address over a backup uplink (e.g. lte:hq=172.16.0.1), tried"
        " after every hub node over the WAN",
    )
    p.add_argument(
        "--from",
        dest="site_file",
        type=Path,
        help="a site file (TOML) naming the stores, tills, HQ nodes and their addresses",
    )
    check_args(p, _one_layout)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing site: new ports and identities (stop its replicas first)",
    )


def cmd_site_init(args: argparse.Namespace) -> int:
    layout = _layout(args)
    site = init_site(
        args.data,
        layout.stores,
        host=layout.host,
        hosts=layout.hosts,
        hq_nodes=layout.hq_nodes,
        uplinks=layout.uplinks,
        force=args.force,
    )
    tills = sum(len(t) for t in layout.stores.values())
    hubs = f" ({len(site.hubs)} hub nodes)" if site.hq_nodes else ""
    print(f"site written to {args.data}: HQ{hubs} + {tills} tills")
    for rid in site.replicas:
        print(f"  {rid:8} api {site.api_url(rid)}")
    print(
        f"the CA keys ({args.data / 'ca.key'}, {args.data / 'routes'}/*.key) stay on this"
        " machine only"
    )
    return 0


def cmd_site_bundle(args: argparse.Namespace) -> int:
    members = write_bundle(args.data, args.replica, args.out)
    print(f"{args.out}: {args.replica}'s bundle ({len(members)} files, no other node's secret)")
    print(f"install it on that machine: tillmesh site install {args.out.name} --data DIR")
    return 0


def cmd_site_install(args: argparse.Namespace) -> int:
    site, node = install_bundle(args.bundle, args.data, force=args.force)
    print(f"installed {node} into {args.data}; run it with:")
    print(f"  {_run_command(site, node, args.data)}")
    if node in site.replicas and not is_loopback(site.host_of(node)):
        role = "hq_admin --name 'catalog team'" if node == HQ else "cashier --name 'till page'"
        print(f"  (its API needs a token first: tillmesh token issue --data {args.data}"
              f" --replica {node} --role {role})")  # fmt: skip
    return 0


def cmd_site_keys(args: argparse.Namespace) -> int:
    added = add_signing_keys(args.data)
    if added:
        print(f"signing keys added for {', '.join(added)}: their events so far are unsigned;"
              " each vouches for them on its first start with its key")  # fmt: skip
    else:
        print("every replica has a signing key already")
    site = load_site(args.data)
    args.bundles.mkdir(parents=True, exist_ok=True)
    names = []
    for node in site.nodes:
        out = args.bundles / f"{node.replace('/', '-')}.tar.gz"
        write_bundle(args.data, node, out)
        names.append(out.name)
    print(f"bundles written to {args.bundles}: {' '.join(names)}")
    print("on each machine, one at a time: stop it, tillmesh site install FILE --data DIR"
          " --force, start it")  # fmt: skip
    return 0


def _run_command(site: Site, node: str, data: Path) -> str:
    if node == HQ:
        return f"tillmesh hq --data {data} --fresh   # --fresh on a brand-new site only"
    if node in site.hq_nodes:
        return f"tillmesh hq --data {data} --node {node}"
    store, _, till = node.partition("/")
    return f"tillmesh till --data {data} --store {store} --till {till} --fresh   # new till"


def _one_layout(args: argparse.Namespace) -> str | None:
    if args.site_file is not None and (args.host or args.hq_node or args.uplink):
        return "--from names the addresses: give --host, --hq-node, --uplink without it"
    return None


def _layout(args: argparse.Namespace) -> SiteLayout:
    if args.site_file is not None:
        return read_site_file(args.site_file)
    stores = {
        f"s{i}": [f"t{j}" for j in range(1, args.tills + 1)] for i in range(1, args.stores + 1)
    }
    nodes = _parsed("--hq-node", parse_hq_node_args, args.hq_node)
    return SiteLayout(
        stores=stores,
        hosts={**_parsed("--host", parse_host_args, args.host, stores), **nodes},
        hq_nodes=list(nodes),
        uplinks=_parsed("--uplink", parse_uplink_args, args.uplink),
    )


def _parsed(flag: str, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)`, a ValueError reported as an error of `flag`."""
    try:
        return parse(*args)
    except ValueError as e:
        raise SiteFileError(flag, str(e)) from None
