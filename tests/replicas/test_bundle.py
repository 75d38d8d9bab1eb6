"""Per-machine bundles: `site bundle` packs one node's share of a site, `site install`
unpacks it on that machine, and a till's bundle holds no other node's secret."""

from __future__ import annotations

import asyncio
import io
import json
import stat
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from replicas.bundle import install_bundle
from replicas.cli.main import main
from replicas.errors import SiteExists, SiteFileError
from replicas.runtime import Replica
from replicas.site import load_site

STORES = ["--stores", "2", "--tills", "2"]


@pytest.fixture
def site_dir(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    assert main(["site", "init", "--data", str(root), *STORES, "--hq-node", "hq2=127.0.0.1"]) == 0
    return root


def _bundle(site_dir: Path, node: str, out: Path) -> dict[str, bytes]:
    assert (
        main(["site", "bundle", "--data", str(site_dir), "--replica", node, "--out", str(out)]) == 0
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds a private key
    with tarfile.open(out) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def _secrets(site_dir: Path) -> dict[str, bytes]:
    """Every secret `site init` wrote, by where it lies: the CA's key, every node's key
    and seed."""
    found = {"ca.key": (site_dir / "ca.key").read_bytes()}
    for path in (site_dir / "routes").glob("*.key"):  # each cluster's route CA
        found[str(path.relative_to(site_dir))] = path.read_bytes()
    for path in site_dir.rglob("identity/*"):
        if path.name in ("node.key", "nkey.seed", "sign.seed", "route.key"):
            found[str(path.relative_to(site_dir))] = path.read_bytes().strip()
    return found


def test_a_tills_bundle_holds_its_own_secrets_and_no_other(site_dir: Path, tmp_path: Path) -> None:
    members = _bundle(site_dir, "s1/t1", tmp_path / "s1-t1.tar.gz")
    assert sorted(members) == [
        "bundle.json", "s1/t1/identity/ca.pem", "s1/t1/identity/nkey.seed",
        "s1/t1/identity/node.key", "s1/t1/identity/node.pem", "s1/t1/identity/route-ca.pem",
        "s1/t1/identity/route.key", "s1/t1/identity/route.pem", "s1/t1/identity/sign.seed",
        "site.json",
    ]  # fmt: skip
    secrets = _secrets(site_dir)
    # the CAs (site, routes of s1, s2, hq); 4 tills and hq (2 keys, 2 seeds); hq2 (2 keys)
    assert len(secrets) == 4 + 4 * 5 + 2
    everything = b"\n".join(members.values())
    held = {where for where, secret in secrets.items() if secret in everything}
    mine = ("node.key", "nkey.seed", "sign.seed", "route.key")
    assert held == {f"s1/t1/identity/{f}" for f in mine}
    assert b"password" not in everything.lower()


def test_a_hub_nodes_bundle_has_no_nkey(site_dir: Path, tmp_path: Path) -> None:
    members = _bundle(site_dir, "hq2", tmp_path / "hq2.tar.gz")
    assert "hq2/identity/node.key" in members and not any("seed" in m for m in members)


async def test_an_installed_bundle_runs_its_till(
    site_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _bundle(site_dir, "s2/t2", tmp_path / "b.tar.gz")
    machine = tmp_path / "machine"
    assert main(["site", "install", str(tmp_path / "b.tar.gz"), "--data", str(machine)]) == 0
    assert "tillmesh till --data" in capsys.readouterr().out
    files = [p for p in machine.rglob("*") if p.is_file()]
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert not (machine / "ca.key").exists() and not (machine / "s1").exists()
    replica = Replica(load_site(machine), "s2/t2", machine, fresh=True)
    async with replica:
        await asyncio.wait_for(replica.ready.wait(), 20)
        assert replica.server is not None and replica.server.running


@pytest.mark.parametrize(("node", "role"), [("hq", "hq_admin"), ("s1/t1", "cashier")])
def test_install_on_the_network_names_the_first_token_to_issue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], node: str, role: str
) -> None:
    """HQ was told to issue a cashier token for a 'till page' it does not have."""
    site = tmp_path / "site"
    hosts = ["--host", "hq=10.0.0.1", "--host", "s1/t1=10.0.1.11"]
    assert main(["site", "init", "--data", str(site), "--tills", "1", *hosts]) == 0
    _bundle(site, node, tmp_path / "b.tar.gz")
    capsys.readouterr()
    assert main(["site", "install", str(tmp_path / "b.tar.gz"), "--data", str(tmp_path / "m")]) == 0
    assert f"--replica {node} --role {role} " in capsys.readouterr().out


def _tampered(tmp_path: Path, good: Path, extra: dict[str, bytes], node: str | None = None) -> Path:
    """`good` with `extra` members added (and its manifest naming `node`)."""
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(good) as src, tarfile.open(out, "w:gz") as dst:
        for m in src:
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "bundle.json" and node is not None:
                data = json.dumps({"node": node}).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
        for name, data in extra.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


@pytest.mark.parametrize(
    ("extra", "node", "says"),
    [
        ({"s1/t2/identity/nkey.seed": b"SU..."}, None, "may not"),
        ({"../escape": b"x"}, None, "may not"),
        ({"/etc/cron.d/x": b"x"}, None, "may not"),
        ({}, "s9/t9", "no replica 's9/t9'"),
    ],
    ids=["another-nodes-seed", "dot-dot", "absolute", "unknown-node"],
)
def test_a_bundle_with_anything_unexpected_installs_nothing(
    site_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, bytes],
    node: str | None,
    says: str,
) -> None:
    good = tmp_path / "good.tar.gz"
    _bundle(site_dir, "s1/t1", good)
    bad = _tampered(tmp_path, good, extra, node)
    machine = tmp_path / "machine"
    assert main(["site", "install", str(bad), "--data", str(machine)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tillmesh: error:") and says in err and "Traceback" not in err
    assert not machine.exists() and not (tmp_path / "escape").exists()


def test_a_symlink_in_a_bundle_is_refused(site_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "link.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        link = tarfile.TarInfo("site.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(SiteFileError, match="not a regular file"):
        install_bundle(out, tmp_path / "machine")


def test_install_keeps_an_installed_site_unless_forced(site_dir: Path, tmp_path: Path) -> None:
    _bundle(site_dir, "s1/t1", tmp_path / "b.tar.gz")
    machine = tmp_path / "machine"
    install_bundle(tmp_path / "b.tar.gz", machine)
    with pytest.raises(SiteExists, match="already exists"):
        install_bundle(tmp_path / "b.tar.gz", machine)
    site, node = install_bundle(tmp_path / "b.tar.gz", machine, force=True)
    assert node == "s1/t1" and site.public_keys == load_site(site_dir).public_keys


def test_a_bundle_of_many_big_files_is_refused_before_it_is_read(tmp_path: Path) -> None:
    out = tmp_path / "bomb.tar.gz"
    with tarfile.open(out, "w:gz") as tar:  # compresses to nothing, unpacks to 40 MiB
        for k in range(40):
            info = tarfile.TarInfo(f"s1/t1/identity/x{k}")
            info.size = 1 << 20
            tar.addfile(info, io.BytesIO(bytes(info.size)))
    tracemalloc.start()
    try:
        with pytest.raises(SiteFileError, match="may not"):
            install_bundle(out, tmp_path / "machine")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak  # read whole first, it took the 40 MiB
    assert not (tmp_path / "machine").exists()
