"""`tillmesh token issue|list|revoke`: API tokens of one replica, on its data folder.

The replica need not be stopped: it re-reads the token file when it changes, so a
revoked token stops working at its next request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicas.api.tokens import TOKENS_FILE, Role, TokenStore, check_name
from replicas.cli.common import SubParsers, add_command, add_group, print_json
from replicas.site import load_site

__all__ = ["register"]


def register(sub: SubParsers) -> None:
    tokens = add_group(
        sub,
        "token",
        "Issue, list and revoke a replica's API tokens (one per device or system).",
        "tillmesh token issue --data /var/lib/tillmesh --replica s1/t1 --role cashier"
        " --name 'front-end t1'",
    )
    p = add_command(
        tokens,
        "issue",
        cmd_issue,
        "Issue a token; it is printed once (only its hash is kept).",
        "tillmesh token issue --data data --replica s1/t1 --role cashier --name 'till page t1'",
    )
    _replica_args(p)
    p.add_argument("--role", required=True, choices=[r.name for r in Role], help="what it may do")
    p.add_argument(
        "--name", required=True, type=_token_name, help="whose it is: a device, a person, a system"
    )
    p = add_command(
        tokens,
        "list",
        cmd_list,
        "List a replica's tokens (never the tokens themselves).",
        "tillmesh token list --data data --replica s1/t1",
    )
    _replica_args(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(
        tokens,
        "revoke",
        cmd_revoke,
        "Revoke a token by its id; the running replica refuses it at once.",
        "tillmesh token revoke --data data --replica s1/t1 3f9a2c1b",
    )
    _replica_args(p)
    p.add_argument("token_id", help="the id `token list` shows")


def _replica_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="the site's data folder")
    p.add_argument("--replica", required=True, help="whose API: hq or <store>/<till>")


def _store(args: argparse.Namespace) -> TokenStore:
    site = load_site(args.data)
    return TokenStore(site.data_dir(args.data, args.replica) / TOKENS_FILE)  # checks the id


def _token_name(text: str) -> str:
    """argparse type: a name the event text rules take (it may be recorded in a sale)."""
    try:
        check_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_issue(args: argparse.Namespace) -> int:
    token = _store(args).issue(args.name, args.role)
    print(token)
    print(f"# {args.role} token for {args.replica} ({args.name}): shown once, keep it safe")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).records()
    if args.json:
        print_json([r.model_dump(exclude={"sha256"}) for r in records])
        return 0
    for r in records:
        print(f"{r.id}  {r.role:9} {r.issued_at}  {r.name}")
    if not records:
        print("no tokens: the API is open on loopback, and refuses to start on the network")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    gone = _store(args).revoke(args.token_id)
    print(f"revoked {gone.id} ({gone.role}, {gone.name})")
    return 0
