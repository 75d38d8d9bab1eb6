"""Rendering nats conf text, checked by nats-server's own parser (``-t``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.config import (
    ClusterSpec,
    ServerConfig,
    UserSpec,
    free_port,
    hq_server_config,
    render_config,
    till_server_config,
)
from broker.credentials import Credentials, generate_store_credentials
from broker.errors import ConfigError
from broker.identity import Nkey, check_public_key
from broker.samples import DATA, HUBS, LEAF_SEED_PLACEHOLDER, TILL, sample_configs
from broker.samples import main as write_samples
from broker.server import EmbeddedNatsServer, nats_server_binary
from broker.tls import SiteCA, write_tls_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nats"
SEED = re.compile(r"S[A-Z][A-Z2-7]{56}")  # any nkey seed (S + kind + 56)


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


def _till_and_hq() -> tuple[ServerConfig, ServerConfig]:
    creds = generate_store_credentials("s1", ["t1", "t2"])
    till = till_server_config(
        "s1",
        "t1",
        creds,
        port=4222,
        cluster_port=6222,
        peer_cluster_addrs=["10.0.0.2:6222"],
        hq_leaf_addrs=["hq-1:7422", "hq-2:7422"],
        http_port=8222,
    )
    hq = hq_server_config(creds, ["s1"], port=4222, leaf_port=7422)
    return till, hq


def test_rendered_configs_pass_nats_server_check(tmp_path: Path) -> None:
    for cfg in _till_and_hq():
        result = _server_accepts(tmp_path, render_config(cfg))
        assert result.returncode == 0, result.stderr


def test_till_config_contents() -> None:
    till, _ = _till_and_hq()
    text = render_config(till)
    assert 'server_name: "s1-t1"' in text
    assert "max_payload: 8388608" in text
    assert 'name: "store-s1"' in text
    assert '@10.0.0.2:6222"' in text and "nats-route://route-s1:" in text
    assert text.count("nats-leaf://leaf-s1:") == 2
    assert 'reconnect: "1000ms"' in text
    assert text.count("allow_responses: true") == 2  # one per till user


def test_hq_leaf_users_carry_permissions_at_top_level() -> None:
    _, hq = _till_and_hq()
    text = render_config(hq)
    leaf_block = text[text.index("leafnodes") :]
    assert "authorization" not in leaf_block  # leaf auth falls back to top-level users
    assert 'user: "leaf-s1"' in text[: text.index("leafnodes")]


@settings(max_examples=25, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1))
def test_any_printable_password_survives_quoting(password: str) -> None:
    # Round-trip through the real parser would be slow; instead, check the quoted
    # form has no unescaped quote that could end the string early.
    cfg = ServerConfig(name="q", port=1, users=(UserSpec(Credentials("u", password)),))
    line = next(x for x in render_config(cfg).splitlines() if "password:" in x)
    quoted = line.split("password: ", 1)[1]
    body = quoted[1:-1]
    assert quoted.startswith('"') and quoted.endswith('"')
    unescaped = body.replace("\\\\", "").replace('\\"', "")
    assert '"' not in unescaped


@pytest.mark.parametrize("pw", ['a"b\\c$d#e{f}g h', "$HOME", "x\\\\y", "tab\\t"])
async def test_awkward_password_authenticates_verbatim(tmp_path: Path, pw: str) -> None:
    # Live: the server must parse back exactly the bytes the client will send.
    cfg = ServerConfig(name="q", port=free_port(), users=(UserSpec(Credentials("u", pw)),))
    async with EmbeddedNatsServer(cfg, tmp_path) as srv:
        nc = await nats.connect(
            srv.client_url, user="u", password=pw, allow_reconnect=False, connect_timeout=2
        )
        await nc.close()


@pytest.mark.parametrize(
    "cfg",
    [
        ServerConfig(name="bad name", port=1),
        ServerConfig(name="x", port=70000),
        ServerConfig(name="x", port=1, leaf_port=0),
        ServerConfig(name="x", port=1, cluster=ClusterSpec(name="c", port=0)),
        ServerConfig(name="x", port=1, max_payload=0),
        ServerConfig(name="x", port=1, leaf_reconnect_seconds=0),
        ServerConfig(name="x", port=1, users=(UserSpec(Credentials("u", "p\n")),)),
    ],
)
def test_invalid_configs_raise_config_error(cfg: ServerConfig) -> None:
    with pytest.raises(ConfigError):
        render_config(cfg)


def test_missing_credentials_named() -> None:
    with pytest.raises(ConfigError, match="route:s1"):
        till_server_config("s1", "t1", {}, port=1, cluster_port=2)


def test_free_port_is_bindable() -> None:
    assert 0 < free_port() < 65536


def test_deploy_samples_are_current(tmp_path: Path) -> None:
    # Regenerate with `python -m broker.samples deploy/nats`.
    (tmp_path / "old.conf").write_text("a sample since dropped")
    write_samples([str(tmp_path)])
    samples = sample_configs()
    assert sorted(p.name for p in DEPLOY.glob("*.conf")) == sorted(samples), "stale or missing"
    assert sorted(p.name for p in tmp_path.glob("*.conf")) == sorted(samples)
    for name, text in samples.items():
        assert (DEPLOY / name).read_text() == text, f"{name} is stale"
        assert (tmp_path / name).read_text() == text


def test_deploy_samples_hold_no_secret_and_no_usable_key() -> None:
    for name, text in sample_configs().items():
        assert not SEED.search(text), f"{name} holds an nkey seed"
        assert "password" not in text and "BEGIN" not in text, name
        keys = re.findall(r'nkey: "(U[A-Z2-7]{55})"', text)
        assert keys and all(k.startswith("UAEXAMPLEKEYOF") for k in keys), name
        assert all(check_public_key(k) == k for k in keys)  # yet each one well-formed


def _fill_in(text: str, data: Path, seed: str) -> str:
    """A sample as it stands on a machine: TLS files under `data`, the till's real seed."""
    return text.replace(f'"{DATA}/', f'"{data}/').replace(LEAF_SEED_PLACEHOLDER, seed)


def test_deploy_samples_are_valid_once_installed(tmp_path: Path) -> None:
    # Every node's identity folder as `site install` writes it, from one site CA.
    ca = SiteCA.generate("sample")
    for node in (*HUBS, TILL):
        issued = ca.issue_server(node.replace("/", "-"), ips=["10.0.1.11"])
        write_tls_files(tmp_path / "data" / node / "identity", ca.cert, issued, stem="node")
    seed = Nkey.generate().seed
    for name, text in sample_configs().items():
        installed = _fill_in(text, tmp_path / "data", seed)
        assert f'"{DATA}/' not in installed and LEAF_SEED_PLACEHOLDER not in installed
        result = _server_accepts(tmp_path, installed)
        assert result.returncode == 0, f"{name}: {result.stderr}"


def test_the_till_sample_as_it_is_cannot_run(tmp_path: Path) -> None:
    (till,) = (t for t in sample_configs().values() if LEAF_SEED_PLACEHOLDER in t)
    result = _server_accepts(tmp_path, till)
    assert result.returncode != 0 and "not a valid seed" in result.stderr
