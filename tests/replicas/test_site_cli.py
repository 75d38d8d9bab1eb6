"""`site init` keeps an existing site and refuses nonsense; commands naming a replica the
site does not have say which it has, and leave nothing behind."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from replicas.bundle import install_bundle
from replicas.cli.main import main
from replicas.keyfiles import load_signer
from replicas.site import load_site
from tests.legacy_site import unsign_site

ROOT = Path(__file__).resolve().parents[2]
TILLMESH = [sys.executable, "-m", "replicas.cli.main"]


def _init(capsys: pytest.CaptureFixture[str], data: Path, *extra: str) -> tuple[int, str]:
    code = main(["site", "init", "--data", str(data), "--stores", "1", "--tills", "2", *extra])
    return code, capsys.readouterr().err


def _files(data: Path) -> dict[str, bytes]:
    names = ("site.json", "ca.pem", "ca.key", "s1/t1/identity/nkey.seed")
    return {name: (data / name).read_bytes() for name in names}


def test_init_refuses_to_replace_a_site_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init(capsys, tmp_path)[0] == 0
    before = _files(tmp_path)

    code, err = _init(capsys, tmp_path)
    assert code == 2
    assert err.startswith("tillmesh: error:") and "already exists" in err and "--force" in err
    assert _files(tmp_path) == before  # running replicas keep their ports and identities

    assert _init(capsys, tmp_path, "--force")[0] == 0
    after = _files(tmp_path)
    assert all(after[name] != before[name] for name in before)  # a new site, new keys
    assert (
        json.loads(after["site.json"])["public_keys"]
        != json.loads(before["site.json"])["public_keys"]
    )


@pytest.mark.parametrize("count", ["-1", "0", "two"])
@pytest.mark.parametrize("flag", ["--stores", "--tills"])
def test_init_counts_must_be_positive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, count: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["site", "init", "--data", str(tmp_path / "site"), flag, count])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err
    assert not (tmp_path / "site").exists()


PR_CAPBSET_DROP = 24  # <linux/prctl.h>
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER = 1, 2, 3  # <linux/capability.h>


def _bound_by_permissions() -> Callable[[], None] | None:
    """A preexec_fn under which folder permissions hold even for root: root writes anywhere
    through these capabilities, and once out of the bounding set exec does not grant them.
    (Switching to `nobody` is no way out: the interpreter may live in root's home.)"""
    if os.geteuid() != 0:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def drop() -> None:
        for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER):
            if prctl(PR_CAPBSET_DROP, cap) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def test_init_in_an_unwritable_folder_is_a_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    proc = subprocess.run(
        [*TILLMESH, "site", "init", "--data", str(locked / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        preexec_fn=_bound_by_permissions(),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tillmesh: error:"), proc.stderr
    assert "Permission denied" in proc.stderr and "Traceback" not in proc.stderr
    assert not (locked / "site").exists()


def test_status_of_a_replica_the_site_lacks_names_those_it_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init(capsys, tmp_path)[0] == 0
    assert main(["status", "--data", str(tmp_path), "--replica", "s9/t9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tillmesh: error:") and "'s9/t9'" in err
    assert "hq, s1/t1, s1/t2" in err


def test_till_the_site_lacks_exits_at_once_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _init(capsys, tmp_path)[0] == 0
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.run(
        [*TILLMESH, "till", "--data", str(tmp_path), "--store", "s9", "--till", "t9"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("tillmesh: error:") and "Traceback" not in proc.stderr
    assert "'s9/t9'" in proc.stderr and "s1/t1" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_keys_add_signs_a_site_made_before_signing_and_rebundles_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "site"
    _init(capsys, data, "--stores", "1", "--tills", "2")
    unsign_site(data)
    bundles = tmp_path / "bundles"
    assert main(["site", "keys", "--data", str(data), "--add", "--bundles", str(bundles)]) == 0
    out = capsys.readouterr().out
    assert "signing keys added for hq, s1/t1, s1/t2" in out
    site = load_site(data)
    assert sorted(site.signing_keys) == site.unsigned_history == ["hq", "s1/t1", "s1/t2"]
    assert sorted(p.name for p in bundles.iterdir()) == [
        "hq.tar.gz",
        "s1-t1.tar.gz",
        "s1-t2.tar.gz",
    ]
    machine = tmp_path / "machine"
    installed, node = install_bundle(bundles / "s1-t1.tar.gz", machine)
    signer = load_signer(installed.identity_dir(machine, node))
    assert installed.key_registry().key_of("s1/t1") == signer.public_key
    assert installed.key_registry().trusts_unsigned("s1/t1")
    # again: nothing to add, the keys made stay
    assert main(["site", "keys", "--data", str(data), "--add", "--bundles", str(bundles)]) == 0
    assert "every replica has a signing key already" in capsys.readouterr().out
    assert load_site(data).signing_keys == site.signing_keys
