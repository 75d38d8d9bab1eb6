"""Running replicas: `till`, `hq` (the HQ replica, or a bare hub node), `status`; the
process's main loop is `replicas.cli.serve`."""

from __future__ import annotations

import argparse
import os
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx

from broker.keyring import CA_CERT
from broker.subjects import HQ
from replicas.cli.common import add_command, print_json
from replicas.errors import LinkError
from replicas.hq.shard import Shard
from replicas.site import Site, load_site
from replicas.uplink import UplinkState

__all__ = ["TOKEN_ENV", "fetch_status", "register"]

TOKEN_ENV = "TILLMESH_TOKEN"  # `status`'s API token, kept off the command line


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        "tillmesh hq --data data\n"
        "  tillmesh hq --data /var/lib/tillmesh --node hq2   # HQ's second hub machine\n"
        "  tillmesh hq --data data --db postgresql://hq@db1/tillmesh --shard 1/2"
        "   # ingest worker 1 of 2 on PostgreSQL",
    )
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--node",
        default=HQ,
        help="the HQ hub node this machine is (default hq: the HQ replica and its hub"
        " node; hq2, hq3, ...: a hub node only)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="only for a brand-new site's HQ: do not wait for one till of every store to "
        "confirm HQ's history (a replacement HQ on an empty log must wait)",
    )
    p.add_argument(
        "--db",
        metavar="postgresql://...",
        help="keep HQ's events and read model in this PostgreSQL database instead of "
        "the SQLite log in --data (created and migrated on first use)",
    )
    p.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="K/N",
        help="with --db: run ingest worker K of N, owning its share of the stores (worker "
        "0 also runs HQ's hub nats-server and API; default 0/1: one worker for all)",
    )
    p.add_argument(
        "--nats",
        metavar="URL",
        help="with --shard K/N, K > 0: the HQ hub nats-server to connect to (default: "
        "HQ's, as the site names it; on another machine, its local hub node's)",
    )
    p.add_argument(
        "--listen",
        type=_host_port,
        metavar="HOST:PORT",
        help="with --shard K/N, K > 0: where this worker serves /healthz, /metrics, the "
        "catalog and reports, and takes HQ's writes for worker 0 "
        "(default: HQ's API host, its port + K); its tokens are HQ's",
    )
    _add_verbosity(p)

    p = add_command(
        sub,
        "status",
        cmd_status,
        "Show a running replica's version vector, peers, lag, receipts and incidents.",
        "tillmesh status --data data --replica s1/t1\n"
        f"  {TOKEN_ENV}=tm_... tillmesh status --data /var/lib/tillmesh --replica s1/t1"
        "   # a till with API tokens",
    )
    p.add_argument("--data", type=Path, help="the site's data folder (to find the replica)")
    p.add_argument("--replica", default=HQ, help="replica id, e.g. s1/t2 or hq")
    p.add_argument("--url", help="the replica's API URL instead of --data/--replica")
    p.add_argument(
        "--token",
        help=f"an API token of the replica (read_only is enough); default ${TOKEN_ENV}. Not"
        " needed for a replica on loopback with no tokens issued (the demo)",
    )
    p.add_argument("--json", action="store_true")


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true", help="log sync activity")


def cmd_till(args: argparse.Namespace) -> int:
    from replicas.cli.serve import run_replica  # the runtime loads only to run one

    return run_replica(
        args.data, f"{args.store}/{args.till}", fresh=args.fresh, verbose=args.verbose
    )


def cmd_hq(args: argparse.Namespace) -> int:
    from replicas.cli.serve import run_hq_worker, run_hub_node, run_replica

    if args.node != HQ:
        return run_hub_node(args.data, args.node, verbose=args.verbose)
    if args.db is not None:
        return run_hq_worker(args.data, args.db, args.shard, args.nats, fresh=args.fresh,
                             verbose=args.verbose, listen=args.listen)  # fmt: skip
    if args.shard != Shard() or args.nats is not None or args.listen is not None:
        raise SystemExit("tillmesh hq: --shard, --nats and --listen need --db postgresql://...")
    return run_replica(args.data, HQ, fresh=args.fresh, verbose=args.verbose)


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


def cmd_status(args: argparse.Namespace) -> int:
    site = load_site(args.data) if args.data is not None else None
    url = args.url or _url_from_site(site, args.replica)
    verify = site.api_verify(args.data / CA_CERT) if site is not None else True
    status = fetch_status(url, args.token or os.environ.get(TOKEN_ENV), verify)
    if args.json:
        print_json(status)
    else:
        _print_status(status)
    return 0


def fetch_status(
    url: str, token: str | None, verify: ssl.SSLContext | bool = True
) -> dict[str, Any]:
    """A replica's `/status` (an https one's certificate checked by `verify`: the site
    CA, given the site's folder); LinkError if it does not answer, or wants a token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(f"{url}/status", headers=headers, timeout=5, verify=verify)
    except httpx.HTTPError as e:
        raise LinkError(f"no replica answering at {url}: {e}") from e
    if response.status_code == 401:
        given = "its API refused the token given" if token else "its API needs a token"
        raise LinkError(
            f"{url}: {given}; give a read_only one (tillmesh token issue --role read_only)"
            f" in ${TOKEN_ENV} or --token"
        )
    try:
        status: dict[str, Any] = response.raise_for_status().json()
    except (httpx.HTTPError, ValueError) as e:
        raise LinkError(f"{url}/status: {e}") from e
    return status


def _url_from_site(site: Site | None, replica_id: str) -> str:
    if site is None:
        print("tillmesh: error: give --data (with --replica) or --url", file=sys.stderr)
        raise SystemExit(2)
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
    for why in (status.get("stale_snapshot") or {}).values():
        print(f"STATE     not its events': {why}")
    if (cards := status.get("card_exposure")) and cards["payments"]:
        print(f"cards     {cards['payments']} taken offline, {cards['amount'] / 100:,.2f} not"
              f" yet captured, oldest {cards['oldest_age_s']} s ago")  # fmt: skip
    if uplink := sync.get("uplink"):
        print(f"uplink    {UplinkState(**uplink).describe()}")
    if kept := status.get("evidence"):
        kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(kept.items()))
        print(f"evidence  {kinds}  (refused events kept: tillmesh log verify lists them)")
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
