"""Till and hub configs rendered to conf text: public keys and TLS blocks, no passwords,
checked by nats-server's own parser (``-t``)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from broker.config import (
    NkeyUserSpec,
    ServerConfig,
    TlsSpec,
    hq_server_config,
    render_config,
    till_server_config,
)
from broker.errors import ConfigError, CredentialsError
from broker.server import connect_options, nats_server_binary
from broker.tls import TlsFiles
from tests.broker.kit import Site

SEED = re.compile(r"S[A-Z][A-Z2-7]{56}")  # any nkey seed (S + kind + 56)


def _configs(site: Site) -> tuple[ServerConfig, ServerConfig]:
    till = till_server_config(
        "s1",
        "t1",
        site.public,
        site.machine("s1-t1"),
        port=4222,
        cluster_port=6222,
        peer_cluster_addrs=["10.0.0.2:6222"],
        hq_leaf_addrs=["hq-1:7422", "hq-2:7422"],
        leaf_nkey=site.keys["s1/t1"],
        http_port=8222,
        client_tls=True,
    )
    hq = hq_server_config(
        site.public, ["s1", "s2"], site.machine("hq"), port=4222, leaf_port=7422, cluster_port=6222
    )
    return till, hq


def _server_accepts(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "check.conf"
    path.write_text(text)
    return subprocess.run(
        [str(nats_server_binary()), "-t", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


def test_identity_configs_pass_nats_server_check(site: Site, tmp_path: Path) -> None:
    for cfg in _configs(site):
        result = _server_accepts(tmp_path, render_config(cfg))
        assert result.returncode == 0, result.stderr


def test_identity_configs_hold_no_password_and_only_the_leaf_seed(site: Site) -> None:
    till, hq = (render_config(c) for c in _configs(site))
    for text in (till, hq):
        assert "password" not in text
        assert "user:" not in text and "@" not in text  # no user:pass@ in route/leaf URLs
    assert SEED.findall(hq) == []  # HQ holds public keys only
    # The till holds one secret, its own seed, for its leaf (nats-server has no seed file).
    assert SEED.findall(till) == [site.keys["s1/t1"].seed]
    for key in ("s1/t1", "s1/t2", "s1/t3"):
        assert f'nkey: "{site.keys[key].public_key}"' in till
    assert site.keys["s2/x"].public_key not in till  # other stores' tills are not users here
    assert f'nkey: "{site.keys["s2/x"].public_key}"' in hq  # s2's till, as a leaf user


def test_till_config_contents(site: Site) -> None:
    till, _ = _configs(site)
    text = render_config(till)
    assert 'server_name: "s1-t1"' in text
    assert "max_payload: 8388608" in text
    assert 'name: "store-s1"' in text
    assert '"nats-route://10.0.0.2:6222"' in text
    assert '"nats-leaf://hq-1:7422"' in text and '"nats-leaf://hq-2:7422"' in text
    assert 'reconnect: "1000ms"' in text
    assert 'http: "127.0.0.1:8222"' in text


def test_identity_configs_render_mutual_tls_and_permissions(site: Site) -> None:
    till, hq = (render_config(c) for c in _configs(site))
    cluster = till[till.index("cluster:") : till.index("leafnodes:")]
    assert "verify: true" in cluster and "ca_file" in cluster and "authorization" not in cluster
    assert till.count("allow_responses: true") == 3  # one per till user, as before
    assert till.count('"_INBOX.s1.t1.>"') == 1  # t1's replies are t1's alone
    assert till.count('"STANDARD"') == 3
    leaf = hq[hq.index("leafnodes:") :]
    # Leaf users in leafnodes { authorization } could carry no permissions: they are
    # top-level users, each till with its own leaf permissions.
    assert "verify: true" in leaf and "authorization" not in leaf
    users = hq[: hq.index("leafnodes:")]
    assert all(f'"tm.pull.hq.s1.{t}"' in users for t in ("t1", "t2", "t3"))
    assert hq.count('"LEAFNODE"') == 4  # a till, at HQ, cannot log in as a client
    assert "ping_interval" in till and "dont_randomize: true" in till  # WAN, then LTE


def _tls(tmp: Path) -> TlsFiles:
    return TlsFiles(tmp / "ca.pem", tmp / "m.pem", tmp / "m.key")


@pytest.mark.parametrize(
    "change",
    [
        lambda c, t: replace(c, tls=TlsSpec(TlsFiles(Path("ca.pem"), Path("m.pem"), Path("k")))),
        lambda c, t: replace(c, tls=TlsSpec(TlsFiles(t.ca_file))),  # listener without a cert
        lambda c, t: replace(c, tls=TlsSpec(t, timeout=0)),
        lambda c, t: replace(c, users=(NkeyUserSpec("UNOTAKEY"),)),
    ],
    ids=["relative-path", "no-cert", "timeout", "bad-nkey"],
)
def test_bad_identity_configs_raise_config_error(
    tmp_path: Path, change: Callable[[ServerConfig, TlsFiles], ServerConfig]
) -> None:
    with pytest.raises(ConfigError):
        render_config(change(ServerConfig(name="x", port=1), _tls(tmp_path)))


def test_missing_identities_are_config_errors(site: Site) -> None:
    with pytest.raises(ConfigError, match="leaf_nkey"):
        till_server_config(
            "s1", "t1", site.public, site.machine("s1-t1"), port=1, cluster_port=2,
            hq_leaf_addrs=["hq:7422"],
        )  # fmt: skip
    with pytest.raises(ConfigError, match="missing entry 'hq'"):
        hq_server_config({}, [], site.machine("hq"), port=1, leaf_port=2)
    with pytest.raises(ConfigError, match="no till of store 's2'"):
        hq_server_config({"hq": site.public["hq"]}, ["s2"], site.machine("hq"), port=1, leaf_port=2)


def test_connect_options_refuse_a_bad_seed_file_up_front(tmp_path: Path) -> None:
    (tmp_path / "bad.nk").write_text("SUnope\n")
    for path in (tmp_path / "bad.nk", tmp_path / "missing.nk"):
        with pytest.raises(CredentialsError):
            connect_options("nats://127.0.0.1:4222", path, "s1/t1")


def test_a_tls_timeout_renders_as_the_server_reads_it(site: Site, tmp_path: Path) -> None:
    till, _ = _configs(site)
    assert till.cluster is not None and till.cluster.tls is not None
    slow = replace(till.cluster, tls=replace(till.cluster.tls, timeout=2.5))
    text = render_config(replace(till, cluster=slow))
    assert "timeout: 2.5" in text
    result = _server_accepts(tmp_path, text)
    assert result.returncode == 0, result.stderr
