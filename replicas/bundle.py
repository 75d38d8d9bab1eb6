"""Per-machine bundles: what one machine of a site needs to run, and nothing more.

`tillmesh site bundle --replica s1/t1 --out s1-t1.tar.gz` (where `site init` ran) packs
the site description, which holds no secret, and that one node's identity folder (its
certificate, key and nkey seed, and the site CA's certificate). Never the CA's key,
never another node's file: a till's disk gives away that till alone.

`tillmesh site install s1-t1.tar.gz --data /var/lib/tillmesh` on the machine unpacks it,
trusting nothing in it: only the expected names, regular files of bounded size, the
manifest naming a node of the site, every file written 0600.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from broker.files import write_private
from broker.keyring import ROUTE_CA, load_identity
from core.errors import StorageError
from replicas.errors import SiteExists, SiteFileError, UnknownReplica
from replicas.keyfiles import SIGNING_SEED
from replicas.site import SITE_FILE, Site, load_site

__all__ = ["MANIFEST", "install_bundle", "write_bundle"]

MANIFEST = "bundle.json"  # {"node": "s1/t1"}
IDENTITY_FILES = frozenset(
    {
        "ca.pem",
        "node.pem",
        "node.key",
        "nkey.seed",
        SIGNING_SEED,
        ROUTE_CA,
        "route.pem",
        "route.key",
    }
)
MAX_MEMBER_BYTES = 1 << 20  # a site.json of thousands of tills is well under this
MAX_MEMBERS = 2 + len(IDENTITY_FILES)  # manifest, site.json, one identity folder


def write_bundle(root: Path, node: str, out: Path) -> list[str]:
    """Pack `node`'s bundle from the site in `root` into `out` (0600); its member names."""
    site = load_site(root)
    identity = site.identity_dir(root, node)  # UnknownReplica for a stranger
    load_identity(identity)  # every file there and well-formed, or CredentialsError
    members = {MANIFEST: json.dumps({"node": node}).encode(), SITE_FILE: _read(root / SITE_FILE)}
    for path in sorted(identity.iterdir()):
        if path.name in IDENTITY_FILES:
            members[f"{node}/{identity.name}/{path.name}"] = _read(path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    write_private(out, buffer.getvalue())
    return list(members)


def install_bundle(bundle: Path, root: Path, *, force: bool = False) -> tuple[Site, str]:
    """Unpack a machine's bundle into `root`; the site and the node it is for."""
    members = dict(_members(bundle))
    node, site = _check(bundle, members)
    if (root / SITE_FILE).exists() and not force:
        raise SiteExists(root / SITE_FILE)
    try:
        for name, data in members.items():
            if name != MANIFEST:
                (root / name).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                write_private(root / name, data)
    except OSError as e:
        raise StorageError(str(root), f"cannot install here: {e.strerror or e}") from e
    load_identity(site.identity_dir(root, node))  # what was written reads back whole
    return site, node


def _members(bundle: Path) -> Iterator[tuple[str, bytes]]:
    """Each regular file of the bundle, by name; SiteFileError for anything else, found
    before its contents are read (a bundle of many big members is not unpacked first)."""
    try:
        with tarfile.open(bundle, mode="r:gz") as tar:
            for n, info in enumerate(tar, start=1):
                if not info.isfile():
                    raise SiteFileError(bundle, f"{info.name}: not a regular file")
                if not _BUNDLE_NAME.fullmatch(info.name) or n > MAX_MEMBERS:
                    raise SiteFileError(bundle, f"holds a file a bundle may not: {info.name!r}")
                if info.size > MAX_MEMBER_BYTES:
                    raise SiteFileError(bundle, f"{info.name}: {info.size} bytes, too big")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file has contents
                yield info.name, handle.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        raise SiteFileError(bundle, f"not a tillmesh bundle: {e}") from e


# What a member may be called at all; `_check` then holds it to the manifest's node.
_BUNDLE_NAME = re.compile(
    rf"{MANIFEST}|{SITE_FILE}|[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)?/identity/"
    rf"({'|'.join(re.escape(f) for f in sorted(IDENTITY_FILES))})"
)


def _check(bundle: Path, members: dict[str, bytes]) -> tuple[str, Site]:
    """The node the manifest names, the site; every member one that bundle may hold."""
    try:
        node = json.loads(members[MANIFEST])["node"]
        site = Site.model_validate_json(members[SITE_FILE])
    except (KeyError, TypeError, ValueError) as e:
        raise SiteFileError(bundle, f"no valid {MANIFEST} and {SITE_FILE}: {e}") from e
    if not isinstance(node, str) or node not in site.nodes:
        raise UnknownReplica(str(node), site.nodes)
    allowed = {MANIFEST, SITE_FILE} | {
        str(PurePosixPath(node, "identity", name)) for name in IDENTITY_FILES
    }
    if strangers := sorted(set(members) - allowed):
        raise SiteFileError(bundle, f"holds files a bundle for {node} may not: {strangers}")
    return node, site


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise StorageError(str(path), e.strerror or str(e)) from e
