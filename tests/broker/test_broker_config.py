"""Rendering nats conf text, checked by nats-server's own parser (``-t``)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nats
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.config import ClusterSpec, ServerConfig, TlsSpec, free_port, render_config
from broker.errors import ConfigError
from broker.identity import Nkey, check_public_key
from broker.samples import DATA, HUBS, LEAF_SEED_PLACEHOLDER, TILL, sample_configs
from broker.samples import main as write_samples
from broker.server import EmbeddedNatsServer, nats_server_binary
from broker.tls import SiteCA, TlsFiles, client_ssl_context, write_tls_files

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


def _with_tls(files: TlsFiles, port: int = 1) -> ServerConfig:
    """A server whose client port speaks TLS with ``files``: the free-form strings
    a conf holds are paths (data folders are wherever the operator put them)."""
    return ServerConfig(name="q", port=port, tls=TlsSpec(files))


PRINTABLE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1)


@settings(max_examples=25, deadline=None)
@given(PRINTABLE)
def test_any_printable_path_survives_quoting(name: str) -> None:
    # Round-trip through the real parser would be slow; instead, check the quoted
    # form has no unescaped quote that could end the string early.
    files = TlsFiles(Path("/ca") / name, Path("/cert.pem"), Path("/key.pem"))
    line = next(x for x in render_config(_with_tls(files)).splitlines() if "ca_file:" in x)
    quoted = line.split("ca_file: ", 1)[1]
    body = quoted[1:-1]
    assert quoted.startswith('"') and quoted.endswith('"')
    unescaped = body.replace("\\\\", "").replace('\\"', "")
    assert '"' not in unescaped


@pytest.mark.parametrize("folder", ['a"b\\c$d#e{f}g h', "$HOME", "x\\\\y", "tab\\t"])
async def test_awkward_paths_are_read_verbatim(tmp_path: Path, folder: str) -> None:
    # Live: the server must open exactly the files named, and serve that certificate.
    ca = SiteCA.generate("test")
    files = write_tls_files(tmp_path / folder, ca.cert, ca.issue_server("q", ips=["127.0.0.1"]))
    async with EmbeddedNatsServer(_with_tls(files, free_port()), tmp_path) as srv:
        tls = client_ssl_context(TlsFiles(files.ca_file))
        nc = await nats.connect(srv.client_url, tls=tls, allow_reconnect=False, connect_timeout=2)
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
        _with_tls(TlsFiles(Path("/ca\n.pem"), Path("/cert.pem"), Path("/key.pem"))),
    ],
)
def test_invalid_configs_raise_config_error(cfg: ServerConfig) -> None:
    with pytest.raises(ConfigError):
        render_config(cfg)


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
    ca, routes = SiteCA.generate("sample"), SiteCA.generate("routes")
    for node in (*HUBS, TILL):
        folder, name = tmp_path / "data" / node / "identity", node.replace("/", "-")
        write_tls_files(folder, ca.cert, ca.issue_server(name, ips=["10.0.1.11"]), stem="node")
        route = routes.issue_server(name, ips=["10.0.1.11"])
        write_tls_files(folder, routes.cert, route, stem="route", ca_name="route-ca.pem")
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
