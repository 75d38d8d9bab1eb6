"""A site's identities on disk: which machine holds which secret.

`tillmesh site init` runs on one machine (store IT's, or the demo's) and makes every
identity of the site there; each other machine later gets only its own folder, in a
bundle (`replicas.bundle`). The files:

    <root>/ca.pem, <root>/ca.key       the site CA; its key never leaves this machine
    <node>/identity/ca.pem             the CA's certificate: whom this machine trusts
    <node>/identity/node.pem, .key     its machine certificate (the addresses peers dial)
    <node>/identity/nkey.seed          its nkey seed (replicas only, not bare hub nodes)
    <node>/identity/route.pem, .key    its route certificate, from its cluster's CA
    <node>/identity/route-ca.pem       that CA's certificate: whom its routes accept
    <root>/routes/<cluster>.pem, .key  each cluster's CA (a store's tills, HQ's hub nodes)

Routes use a CA of their own per cluster because mutual TLS against the site CA alone
let any machine of the site in: a till's bundle joined another store's routes, or HQ's
hub, with no permissions at all (found in review). A route certificate is valid for its
own cluster only, so a stolen bundle reaches no further than its own store's routes.

A till's one nkey is its client user on its store's servers *and* its leaf user at HQ
(each listed with the permissions of that role, on different servers), so no two
machines share a secret: a till's disk gives away that till, nothing more. Its seed
sits inline in its own nats-server conf too (leaf remotes read no seed file; see
`broker.config`), which is written 0600 into its own data folder.

Public halves (the nkeys' public keys) go into `site.json`, which every machine holds.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from broker.errors import CredentialsError
from broker.identity import Nkey, load_seed
from broker.tls import SiteCA, TlsFiles, load_cert, write_tls_files

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "IDENTITY_DIR",
    "ROUTE_CA",
    "NodeIdentity",
    "issue_identity",
    "load_identity",
    "make_route_ca",
    "make_site_ca",
    "node_files",
    "route_files",
    "site_ca",
]

CA_CERT, CA_KEY = "ca.pem", "ca.key"
IDENTITY_DIR = "identity"
SEED_FILE = "nkey.seed"
_STEM = "node"  # node.pem, node.key: one machine certificate per folder
_ROUTE = "route"  # route.pem, route.key: its certificate for its cluster's routes
ROUTE_CA = "route-ca.pem"
ROUTES_DIR = "routes"


@dataclass(frozen=True)
class NodeIdentity:
    """What one machine holds to speak for itself: TLS material, and its nkey if it is a
    replica (a bare hub node dials and answers servers only)."""

    directory: Path
    tls: TlsFiles
    seed_file: Path | None
    route_tls: TlsFiles | None = None  # its cluster's CA and its route certificate

    def nkey(self) -> Nkey:
        if self.seed_file is None:
            raise CredentialsError(self.directory / SEED_FILE, "this node has no nkey")
        return load_seed(self.seed_file)


def make_site_ca(root: Path, name: str) -> SiteCA:
    """A new CA for the site in `root` (ca.pem, and ca.key 0600)."""
    ca = SiteCA.generate(name)
    ca.save(root / CA_CERT, root / CA_KEY)
    return ca


def site_ca(root: Path) -> SiteCA:
    """The site CA kept where `site init` ran; CredentialsError elsewhere."""
    return SiteCA.load(root / CA_CERT, root / CA_KEY)


def issue_identity(
    ca: SiteCA,
    directory: Path,
    name: str,
    addresses: Iterable[str],
    *,
    nkey: bool,
    route_ca: SiteCA | None = None,
) -> str | None:
    """Write a machine's identity folder: its certificate for `addresses` (IPs or DNS
    names its peers dial), its route certificate from `route_ca` (its cluster's), and,
    with `nkey`, a fresh seed; the public key, if any."""
    ips, dns = _split_addresses(addresses)
    issued = ca.issue_server(name, ips=ips, dns=dns)
    write_tls_files(directory, ca.cert, issued, stem=_STEM)
    if route_ca is not None:
        route = route_ca.issue_server(name, ips=ips, dns=dns)
        write_tls_files(directory, route_ca.cert, route, stem=_ROUTE, ca_name=ROUTE_CA)
    if not nkey:
        return None
    key = Nkey.generate()
    key.save_seed(directory / SEED_FILE)
    return key.public_key


def load_identity(directory: Path) -> NodeIdentity:
    """A machine's identity folder, every file checked to be there and readable; a
    CredentialsError names the first that is not (e.g. a bundle never installed)."""
    directory = directory.resolve()
    tls = node_files(directory)
    for path in (tls.ca_file, tls.cert_file):
        assert path is not None
        load_cert(path)  # CredentialsError naming the file if missing or not a certificate
    assert tls.key_file is not None
    if not tls.key_file.exists():
        raise CredentialsError(tls.key_file, "missing: install this machine's bundle")
    seed = directory / SEED_FILE
    route = route_files(directory)
    assert route.cert_file is not None
    route_tls = route if route.cert_file.exists() else None
    return NodeIdentity(directory, tls, seed if seed.exists() else None, route_tls)


def node_files(directory: Path) -> TlsFiles:
    """Where an identity folder keeps the site CA and the machine certificate."""
    return TlsFiles(directory / "ca.pem", directory / f"{_STEM}.pem", directory / f"{_STEM}.key")


def route_files(directory: Path) -> TlsFiles:
    """Where an identity folder keeps its cluster's CA and its route certificate."""
    return TlsFiles(directory / ROUTE_CA, directory / f"{_ROUTE}.pem", directory / f"{_ROUTE}.key")


def make_route_ca(root: Path, cluster: str) -> SiteCA:
    """A new CA for one cluster's routes, kept (key included) where `site init` ran."""
    ca = SiteCA.generate(f"routes-{cluster}")
    folder = root / ROUTES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ca.save(folder / f"{cluster}.pem", folder / f"{cluster}.key")
    return ca


def _split_addresses(addresses: Iterable[str]) -> tuple[list[str], list[str]]:
    ips, dns = [], []
    for address in dict.fromkeys(addresses):
        try:
            ipaddress.ip_address(address)
            ips.append(address)
        except ValueError:
            dns.append(address)
    return ips, dns
