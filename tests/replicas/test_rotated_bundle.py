"""A till that rotated its key refuses to start with the key it rotated away from: an old
bundle installed over its folder, or onto a replacement machine with its log restored,
would sign its next events with the retired (maybe stolen) key, which every replica
refuses past the rotation. A clear error, before any event is signed or a port opened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from broker.keyring import load_identity
from conflict.state import StoreState
from core.events import KeyRotated, event_hash
from core.log import EventLog
from core.signing import Ed25519Signer, encode_public_key, new_signing_seed
from replicas.bundle import install_bundle, write_bundle
from replicas.keyfiles import (
    NEXT_SEED,
    ROTATED_KEYS,
    SIGNING_SEED,
    load_signer,
    rotated_keys,
    write_rotated_key,
)
from replicas.runtime import Replica
from replicas.site import Site, init_site
from tests.factories import cash_sale, chain

ROOT = Path(__file__).resolve().parents[2]
T1 = "s1/t1"


@pytest.fixture
def installed_till(tmp_path: Path) -> tuple[Site, Path]:
    """A one-till site (in tmp_path/site), and s1/t1's machine folder with its bundle
    (tmp_path/t1.tar.gz) installed."""
    site = init_site(tmp_path / "site", {"s1": ["t1"]})
    bundle = tmp_path / "t1.tar.gz"
    write_bundle(tmp_path / "site", T1, bundle)
    machine = tmp_path / "machine"
    install_bundle(bundle, machine)
    return site, machine


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


async def test_an_old_bundle_over_a_rotated_till_is_refused(
    tmp_path: Path, installed_till: tuple[Site, Path]
) -> None:
    site, machine = installed_till
    old_bundle = tmp_path / "t1.tar.gz"
    await _rotate(site, machine, sell_after=True)

    install_bundle(old_bundle, machine, force=True)  # the old key back in sign.seed
    proc = _start_till(machine)
    assert proc.returncode == 2 and proc.stderr.startswith("tillmesh: error:"), proc.stderr
    assert "is retired (this till rotated to" in proc.stderr and "Traceback" not in proc.stderr

    (site.identity_dir(machine, T1) / ROTATED_KEYS).unlink()  # a new machine: no such list
    proc = _start_till(machine)
    assert proc.returncode == 2, proc.stderr
    assert "is retired (its own event s1/t1:2 is signed by key" in proc.stderr


async def test_a_key_hq_rotated_away_from_is_refused(
    tmp_path: Path, installed_till: tuple[Site, Path]
) -> None:
    site, machine = installed_till
    old_bundle = tmp_path / "t1.tar.gz"
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


class _Crash(BaseException):
    """The process dying between two steps of a rotation (not an error anything handles)."""


async def _sell_then_crash_rotating(
    site: Site, machine: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str
) -> tuple[str, str]:
    """t1 sells once, then rotates its key and "dies" at the first rename onto `crash_at`;
    the old public key and the new one."""
    folder = site.identity_dir(machine, T1)
    log_path = site.data_dir(machine, T1) / "log.db"
    old = load_signer(folder)
    async with await EventLog.open(log_path, T1, StoreState(), signer=old) as log:
        await log.append(cash_sale())
    real_replace = os.replace

    def crashing_replace(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name == crash_at:
            raise _Crash
        real_replace(src, dst)

    seed = new_signing_seed()
    monkeypatch.setattr(os, "replace", crashing_replace)
    with pytest.raises(_Crash):
        write_rotated_key(folder, seed, 2)
    monkeypatch.setattr(os, "replace", real_replace)
    return encode_public_key(old.public_key), encode_public_key(Ed25519Signer(seed).public_key)


async def _key_at_start(site: Site, machine: Path) -> str:
    """The key the till loads and checks at start (`Replica._start_parts`, before its
    network): RetiredSigningKey if it would refuse to start."""
    replica = Replica(site, T1, machine)
    replica.identity = load_identity(site.identity_dir(machine, T1))
    replica.log = await replica._open_log()
    try:
        await replica._check_signing_key()
        signer = replica.log.signer
        assert isinstance(signer, Ed25519Signer)
        return encode_public_key(signer.public_key)
    finally:
        await replica.log.close()


async def test_a_crash_before_the_new_seed_is_in_place_still_starts(
    installed_till: tuple[Site, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    site, machine = installed_till
    _, new = await _sell_then_crash_rotating(site, machine, monkeypatch, SIGNING_SEED)
    assert await _key_at_start(site, machine) == new  # the rotation finished at start
    folder = site.identity_dir(machine, T1)
    assert list(rotated_keys(folder)) == [new] and not (folder / NEXT_SEED).exists()


async def test_a_crash_before_the_rotated_list_keeps_the_old_key(
    installed_till: tuple[Site, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    site, machine = installed_till
    old, _ = await _sell_then_crash_rotating(site, machine, monkeypatch, ROTATED_KEYS)
    assert await _key_at_start(site, machine) == old  # nothing was signed with the new one
    folder = site.identity_dir(machine, T1)
    assert rotated_keys(folder) == {} and not (folder / NEXT_SEED).exists()


async def test_a_rotated_key_whose_seed_was_lost_before_signing_is_dropped(
    installed_till: tuple[Site, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash left in a build that wrote the list before the seed: the list names
    a new key whose seed is gone, sign.seed still holds the old one."""
    site, machine = installed_till
    old, new = await _sell_then_crash_rotating(site, machine, monkeypatch, SIGNING_SEED)
    folder = site.identity_dir(machine, T1)
    (folder / NEXT_SEED).unlink(missing_ok=True)
    assert list(rotated_keys(folder)) == [new]
    assert await _key_at_start(site, machine) == old
    assert rotated_keys(folder) == {}
