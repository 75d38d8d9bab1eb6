"""`tillmesh token issue|list|revoke`: API tokens of one replica, on its data folder.

A token with `--person` is that person's: what it writes is recorded as theirs. One
without is a device's (a till's front end, a tablet, an integrator, a BI tool), which
states who the cashier is and vouches for it by its role.

The replica need not be stopped: it re-reads the token file when it changes, so a
revoked token stops working at its next request.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from replicas.api.tokens import TOKENS_FILE, Role, TokenStore, check_name, check_person
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
        "tillmesh token issue --data data --replica s1/t1 --role cashier --name 'till page t1'\n  "
        "tillmesh token issue --data data --replica s1/t1 --role cashier --name Ann --person C042",
    )
    _replica_args(p)
    p.add_argument("--role", required=True, choices=[r.name for r in Role], help="what it may do")
    p.add_argument(
        "--name", required=True, type=_token_name, help="whose it is: a device, a person, a system"
    )
    p.add_argument(
        "--person",
        type=_person,
        help="bind it to a person (a cashier or manager id, e.g. C042): every sale, void,"
        " refund... it makes is recorded as that person's, and it cannot act as anyone else",
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


def _person(text: str) -> str:
    """argparse type: a person's id the event text rules take (it is recorded in events)."""
    try:
        check_person(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def cmd_issue(args: argparse.Namespace) -> int:
    token = _store(args).issue(args.name, args.role, person=args.person or "")
    whose = f"{args.person}'s" if args.person else "a device's"
    print(token)
    print(
        f"# {args.role} token for {args.replica} ({args.name}, {whose}): shown once, keep it safe"
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    records = _store(args).records()
    if args.json:
        print_json([r.model_dump(exclude={"sha256"}) for r in records])
        return 0
    for r in records:
        person = f"person {r.person}" if r.person else "device"
        print(f"{r.id}  {r.role:9} {r.issued_at}  {person:14} {r.name}")
    if not records:
        print("no tokens: the API is open on loopback, and refuses to start on the network")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    gone = _store(args).revoke(args.token_id)
    print(f"revoked {gone.id} ({gone.role}, {gone.name})")
    return 0
