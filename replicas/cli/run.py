"""Running replicas: `site init`, `till`, `hq`, `status`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from broker.subjects import HQ
from replicas.cli.common import add_command, add_group, check_args, positive_int, print_json
from replicas.errors import LinkError, SiteFileError
from replicas.layout import SiteLayout, parse_host_args, read_site_file
from replicas.runtime import Replica
from replicas.site import init_site, load_site

__all__ = ["register", "run_replica"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sites = add_group(
        sub,
        "site",
        "Create the configuration of a site (stores, tills, HQ).",
        "tillmesh site init --data data --stores 2 --tills 3",
    )
    p = add_command(
        sites,
        "init",
        cmd_site_init,
        "Write DATA/site.json (where each replica runs, its ports) and its credentials.",
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
        "--from",
        dest="site_file",
        type=Path,
        help="a site file (TOML) naming the stores, tills and their addresses",
    )
    check_args(p, _one_layout)
    p.add_argument(
        "--force",
        action="store_true",
        help="replace an existing site: new ports and credentials (stop its replicas first)",
    )

    p = add_command(
        sub,
        "till",
        cmd_till,
        "Run one till in the foreground: log, nats-server, sync, HTTP API and page.",
        "tillmesh till --data data --store s1 --till t1",
    )
    p.add_argument("--data", type=Path, required=True, help="the site's data folder")
    p.add_argument("--store", required=True)
    p.add_argument("--till", required=True)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="a brand-new till: do not wait for peers to confirm its history",
    )
    _add_verbosity(p)

    p = add_command(
        sub,
        "hq",
        cmd_hq,
        "Run the HQ read replica in the foreground (hub nats-server, ingest, catalog API).",
        "tillmesh hq --data data",
    )
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="only for a brand-new site's HQ: do not wait for one till of every store to "
        "confirm HQ's history (a replacement HQ on an empty log must wait)",
    )
    _add_verbosity(p)

    p = add_command(
        sub,
        "status",
        cmd_status,
        "Show a running replica's version vector, peers, lag, receipts and incidents.",
        "tillmesh status --data data --replica s1/t1",
    )
    p.add_argument("--data", type=Path, help="the site's data folder (to find the replica)")
    p.add_argument("--replica", default=HQ, help="replica id, e.g. s1/t2 or hq")
    p.add_argument("--url", help="the replica's API URL instead of --data/--replica")
    p.add_argument("--json", action="store_true")


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log sync activity")


def cmd_site_init(args: argparse.Namespace) -> int:
    layout = _layout(args)
    site = init_site(
        args.data, layout.stores, host=layout.host, hosts=layout.hosts, force=args.force
    )
    tills = sum(len(t) for t in layout.stores.values())
    print(f"site written to {args.data}: HQ + {tills} tills")
    for rid in site.replicas:
        print(f"  {rid:8} api {site.api_url(rid)}")
    return 0


def _one_layout(args: argparse.Namespace) -> str | None:
    if args.site_file is not None and args.host:
        return "--from names the addresses: give --host without it"
    return None


def _layout(args: argparse.Namespace) -> SiteLayout:
    if args.site_file is not None:
        return read_site_file(args.site_file)
    stores = {
        f"s{i}": [f"t{j}" for j in range(1, args.tills + 1)] for i in range(1, args.stores + 1)
    }
    try:
        return SiteLayout(stores=stores, hosts=parse_host_args(args.host, stores))
    except ValueError as e:
        raise SiteFileError("--host", str(e)) from None


def cmd_till(args: argparse.Namespace) -> int:
    return run_replica(
        args.data, f"{args.store}/{args.till}", fresh=args.fresh, verbose=args.verbose
    )


def cmd_hq(args: argparse.Namespace) -> int:
    return run_replica(args.data, HQ, fresh=args.fresh, verbose=args.verbose)


def run_replica(root: Path, replica_id: str, *, fresh: bool, verbose: bool = False) -> int:
    site, creds = load_site(root)
    replica = Replica(site, creds, replica_id, root, fresh=fresh)  # refuses unknown ids
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format=f"%(asctime)s {replica_id} %(levelname)s %(message)s",
    )
    asyncio.run(_run(replica))
    return 0


async def _run(replica: Replica) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await replica.start()
    try:
        if await _first(replica.ready, stop, replica.failed) is replica.ready:
            url = replica.site.api_url(replica.replica_id)
            print(f"{replica.replica_id} serving on {url}", flush=True)
            await _first(stop, replica.failed)
    finally:
        await replica.stop()
    if replica.failure is not None:  # raised once stopped: log closed, server reaped
        raise replica.failure


async def _first(*events: asyncio.Event) -> asyncio.Event:
    """Whichever of `events` is set first."""
    waits = {asyncio.create_task(e.wait()): e for e in events}
    try:
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in waits:
            task.cancel()
    return waits[done.pop()]


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url or _url_from_site(args.data, args.replica)
    try:
        status = httpx.get(f"{url}/status", timeout=5).raise_for_status().json()
    except httpx.HTTPError as e:
        raise LinkError(f"no replica answering at {url}: {e}") from e
    if args.json:
        print_json(status)
    else:
        _print_status(status)
    return 0


def _url_from_site(root: Path | None, replica_id: str) -> str:
    if root is None:
        print("tillmesh: error: give --data (with --replica) or --url", file=sys.stderr)
        raise SystemExit(2)
    site, _ = load_site(root)
    return site.api_url(replica_id)


def _print_status(status: dict[str, Any]) -> None:
    sync = status.get("sync") or {}
    rid = status.get("replica_id")
    at_hq = "" if rid == HQ else f"not yet at HQ: {status.get('unsynced_to_hq')}   "
    print(
        f"replica   {rid}   online: {status.get('online')}   {at_hq}"
        f"open conflicts: {status.get('open_conflicts', '-')}"
    )
    # Held (waiting for a gap to fill) and refused events: zero when all is well.
    print(f"events    {status.get('events')}   held: {status.get('pending')}   "
          f"quarantined: {status.get('quarantined')}")  # fmt: skip
    for origin, ahead in sorted((status.get("clock_ahead") or {}).items()):
        print(f"clock     {origin}: {ahead['events']} event(s) too far ahead of this clock,"
              f" newest {ahead['newest']}, {ahead['ahead_ms'] // 1000} s ahead now")  # fmt: skip
    _print_origins(sync.get("origins") or {}, sync.get("receipts") or {})
    for incident in sync.get("incidents", []):
        print(
            f"incident  {incident['peer']}: {incident['kind']} x{incident['count']} "
            f"({incident['last_detail']})"
        )
    _print_server(sync.get("nats_server") or {})


def _print_origins(origins: dict[str, dict[str, Any]], receipts: dict[str, int]) -> None:
    """Per till (by store) and HQ: what we hold, what we know we lack and since when,
    when it was last heard, and how many of our own events it holds."""
    if not origins:
        return
    print(f"{'origin':14} {'held':>8} {'behind':>7} {'missing for':>12} {'last seen':>10} "
          f"{'holds ours':>10}")  # fmt: skip
    for origin, o in sorted(origins.items(), key=lambda kv: (kv[0] != HQ, kv[0])):
        missing = "-" if o["missing_for"] is None else f"{o['missing_for']:.0f} s"
        seen = "never" if o["last_seen"] is None else f"{o['last_seen']:.1f} s ago"
        ours = receipts.get(origin, "-")
        print(f"{origin:14} {o['held']:>8} {o['behind']:>7} {missing:>12} {seen:>10} {ours:>10}")


def _print_server(server: dict[str, Any]) -> None:
    """Only when down: a till without its nats-server sells but syncs nothing."""
    if server.get("up") is not False:
        return
    retry = server.get("next_restart_in")
    when = "" if retry is None else f", next in {retry:.0f} s"
    print(f"nats-server DOWN: {server.get('reason')} (restarts {server.get('restarts')}{when})")
    for line in server.get("log_tail") or []:
        print(f"  {line}")
