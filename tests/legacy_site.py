"""A site as `tillmesh site init` wrote it before events were signed: no `signing_keys`
in site.json and no signing seed in any identity folder (what `site keys --add` upgrades)."""

from __future__ import annotations

import json
from pathlib import Path

from broker.keyring import IDENTITY_DIR
from replicas.keyfiles import SIGNING_SEED
from replicas.site import SITE_FILE

__all__ = ["unsign_site"]


def unsign_site(root: Path) -> None:
    """Make the site in `root` one from before signing keys."""
    path = root / SITE_FILE
    site = json.loads(path.read_text())
    site.pop("signing_keys", None)
    site.pop("unsigned_history", None)
    path.write_text(json.dumps(site, indent=2) + "\n")
    for seed in root.rglob(f"{IDENTITY_DIR}/{SIGNING_SEED}"):
        seed.unlink()
