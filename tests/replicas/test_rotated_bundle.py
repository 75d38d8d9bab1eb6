"""A till that rotated its key refuses to start with the key it rotated away from: an old
bundle installed over its folder, or onto a replacement machine with its log restored,
would sign its next events with the retired (maybe stolen) key, which every replica
refuses past the rotation. A clear error, before any event is signed or a port opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec

from conflict.state import StoreState
from core.events import KeyRotated, event_hash
from core.log import EventLog
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from replicas.bundle import install_bundle, write_bundle
from replicas.keyfiles import ROTATED_KEYS, load_signer, write_rotated_key
from replicas.site import Site, init_site
from tests.factories import cash_sale, chain

ROOT = Path(__file__).resolve().parents[2]
T1 = "s1/t1"


async def _rotate(site: Site, root: Path, *, sell_after: bool) -> tuple[str, int]:
    """t1 sells, rotates its key (as POST /keys/rotate does), maybe sells on."""
    folder = site.identity_dir(root, T1)
    log_path = site.data_dir(root, T1) / "log.db"
    async with await EventLog.open(log_path, T1, StoreState(), signer=load_signer(folder)) as log:
        await log.append(cash_sale())
        seed = new_signing_seed()
        new = Ed25519Signer(seed, tagged=True)
        from_seq = await log.switch_signer(new, lambda n: write_rotated_key(folder, seed, n))
        if sell_after:
            await log.append(cash_sale(receipt="R-2"))
    return encode_public_key(new.public_key), from_seq


def _start_till(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "replicas.cli.main", "till", "--data", str(root),
         "--store", "s1", "--till", "t1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


async def test_an_old_bundle_over_a_rotated_till_is_refused(tmp_path: Path) -> None:
    site = init_site(tmp_path / "site", {"s1": ["t1"]})
    old_bundle = tmp_path / "t1.tar.gz"
    write_bundle(tmp_path / "site", T1, old_bundle)
    machine = tmp_path / "machine"
    install_bundle(old_bundle, machine)
    await _rotate(site, machine, sell_after=True)

    install_bundle(old_bundle, machine, force=True)  # the old key back in sign.seed
    proc = _start_till(machine)
    assert proc.returncode == 2 and proc.stderr.startswith("tillmesh: error:"), proc.stderr
    assert "is retired (this till rotated to" in proc.stderr and "Traceback" not in proc.stderr

    (site.identity_dir(machine, T1) / ROTATED_KEYS).unlink()  # a new machine: no such list
    proc = _start_till(machine)
    assert proc.returncode == 2, proc.stderr
    assert "is retired (its own event s1/t1:2 is signed by key" in proc.stderr


async def test_a_key_hq_rotated_away_from_is_refused(tmp_path: Path) -> None:
    site = init_site(tmp_path / "site", {"s1": ["t1"]})
    old_bundle = tmp_path / "t1.tar.gz"
    write_bundle(tmp_path / "site", T1, old_bundle)
    machine = tmp_path / "machine"
    install_bundle(old_bundle, machine)
    public_key, from_seq = await _rotate(site, machine, sell_after=False)
    hq_key = load_signer(site.identity_dir(tmp_path / "site", "hq"))
    (rotated,) = chain("hq", [KeyRotated(replica=T1, public_key=public_key, from_seq=from_seq)])
    rotated = msgspec.structs.replace(rotated, sig=hq_key.sign(event_hash(rotated)))
    log_path = site.data_dir(machine, T1) / "log.db"
    async with await EventLog.open(log_path, T1, StoreState(),
                                   verifier=site.key_registry()) as log:  # fmt: skip
        assert (await log.ingest([rotated], peer="hq")).accepted  # HQ vouched

    install_bundle(old_bundle, machine, force=True)
    (site.identity_dir(machine, T1) / ROTATED_KEYS).unlink()
    proc = _start_till(machine)
    assert proc.returncode == 2, proc.stderr
    assert "HQ's rotation in the log makes" in proc.stderr
