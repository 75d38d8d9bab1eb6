"""Where each replica runs: `site init --host` and a site file (TOML) give every replica
its own address; one alone on its address uses the standard ports, and the generated
nats-server configs listen there and dial the peers' addresses. The one-machine layout
(loopback, free ports) stays the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509

from broker import samples
from broker.config import render_config
from broker.identity import Nkey, load_seed
from broker.keyring import NodeIdentity, load_identity
from broker.tls import TlsFiles, load_cert
from replicas.cli.main import main
from replicas.site import STANDARD_PORTS, Site, init_site, load_site
from replicas.uplink import read_uplink

HOSTS = ["hq=10.0.0.1", "s1/t1=10.0.1.11", "s1/t2=10.0.1.12"]
SITE_TOML = """
[hq]
host = "10.0.0.1"

[stores.s1]
tills = { t1 = "10.0.1.11", t2 = "10.0.1.12" }

[stores.s2]
host = "10.0.2.1"
tills = ["t1", "t2"]
"""


def _init(data: Path, *args: str) -> int:
    return main(["site", "init", "--data", str(data), *args])


def test_hosts_per_replica_get_the_standard_ports_and_configs_name_them(tmp_path: Path) -> None:
    hosts = [a for h in HOSTS for a in ("--host", h)]
    assert _init(tmp_path, "--stores", "1", "--tills", "2", *hosts) == 0
    site = load_site(tmp_path)
    assert site.hosts == {"hq": "10.0.0.1", "s1/t1": "10.0.1.11", "s1/t2": "10.0.1.12"}
    for rid in site.replicas:
        ports = site.node(rid)
        assert (ports.nats, ports.monitor, ports.api) == (4222, 8222, 8080)
    assert site.api_url("s1/t2") == "http://10.0.1.12:8080"
    till = render_config(site.server_config("s1/t1", _identity(tmp_path, site, "s1/t1")))
    assert 'listen: "127.0.0.1:4222"' in till  # clients: the till's own process only
    assert '"10.0.1.11:6222"' in till  # its routes listen on its machine's address
    assert "10.0.1.12:6222" in till  # the route to its peer's machine
    assert "10.0.0.1:7422" in till  # the leaf link to HQ's machine
    hq = render_config(site.server_config("hq", _identity(tmp_path, site, "hq")))
    assert '"10.0.0.1:7422"' in hq and 'listen: "127.0.0.1:4222"' in hq


def _identity(root: Path, site: Site, node: str) -> NodeIdentity:
    return load_identity(site.identity_dir(root, node))


def test_a_site_file_describes_stores_tills_and_addresses(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(SITE_TOML)
    assert _init(tmp_path / "data", "--from", str(tmp_path / "site.toml")) == 0
    site = load_site(tmp_path / "data")
    assert site.stores == {"s1": ["t1", "t2"], "s2": ["t1", "t2"]}
    assert site.host_of("s1/t2") == "10.0.1.12"
    # Both tills of s2 run at the store's address: they share it, so free ports.
    assert site.host_of("s2/t1") == site.host_of("s2/t2") == "10.0.2.1"
    assert site.node("s2/t1").api != site.node("s2/t2").api
    assert site.node("s1/t1").api == STANDARD_PORTS["api"]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[stores.s1]\ntills = ["t1"]\n[hq]\nhost = "not an address"\n', "[hq] host"),
        ('[stores.s1]\ntills = { t1 = "10.0.1.300" }\n', "[stores.s1] t1"),
        ("[stores.s1]\ntills = []\n", "stores.s1.tills"),
        ('[stores."s 1"]\ntills = ["t1"]\n', "s 1"),
        ('[stores.s1]\ntills = ["t1"]\nprice = 3\n', "price"),
        ("[stores.s1\n", "not valid TOML"),
    ],
)
def test_a_bad_site_file_is_a_clear_error_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, says: str
) -> None:
    (tmp_path / "site.toml").write_text(text)
    assert _init(tmp_path / "data", "--from", str(tmp_path / "site.toml")) == 2
    err = capsys.readouterr().err
    assert err.startswith("tillmesh: error:") and says in err and "Traceback" not in err
    assert not (tmp_path / "data" / "site.json").exists()


@pytest.mark.parametrize(
    ("arg", "says"),
    [
        ("s9/t1=10.0.0.5", "s9/t1: not a store"),
        ("s1/t1", "REPLICA=ADDRESS"),
        ("s1/t1=no way", "neither an IP"),
    ],
)
def test_a_bad_host_argument_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arg: str, says: str
) -> None:
    assert _init(tmp_path, "--host", arg) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "site.json").exists()


def test_a_store_default_address_and_the_one_machine_default(tmp_path: Path) -> None:
    site = init_site(tmp_path / "a", {"s1": ["t1", "t2"]})  # the default: one machine
    assert site.hosts == {} and len({site.node(r).api for r in site.replicas}) == 3
    assert _init(tmp_path / "b", "--stores", "1", "--tills", "2", "--host", "s1=10.0.1.1") == 0
    data = json.loads((tmp_path / "b" / "site.json").read_text())
    assert data["hosts"] == {"s1/t1": "10.0.1.1", "s1/t2": "10.0.1.1"}


HQ_NODES_TOML = """
[hq]
host = "10.0.0.1"
nodes = { hq2 = "10.0.0.2", hq3 = "10.0.0.3" }

[uplinks.lte]
hq = "172.16.0.1"
hq2 = "172.16.0.2"
hq3 = "172.16.0.3"

[stores.s1]
tills = { t1 = "10.0.1.11", t2 = "10.0.1.12" }
"""


def test_hq_nodes_form_a_hub_and_tills_try_the_wan_then_lte(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(HQ_NODES_TOML)
    assert _init(tmp_path / "data", "--from", str(tmp_path / "site.toml")) == 0
    site = load_site(tmp_path / "data")
    assert site.hubs == ["hq", "hq2", "hq3"] and site.nodes[:3] == site.hubs
    # Each till starts at another hub node; the WAN before LTE, for every till.
    assert site.hq_leaf_addrs("s1/t1") == [
        "10.0.0.1:7422", "10.0.0.2:7422", "10.0.0.3:7422",
        "172.16.0.1:7422", "172.16.0.2:7422", "172.16.0.3:7422",
    ]  # fmt: skip
    assert site.hq_leaf_addrs("s1/t2")[0] == "10.0.0.2:7422"
    assert site.hq_leaf_addrs("s1/t2")[3] == "172.16.0.2:7422"
    hq2 = render_config(site.server_config("hq2", _identity(tmp_path / "data", site, "hq2")))
    assert "10.0.0.1:6222" in hq2 and "10.0.0.3:6222" in hq2  # routes to the other nodes
    # Its leaf listener answers at both of its addresses (WAN side, LTE side); its routes
    # only on HQ's own network, with certificates of HQ's route CA.
    assert '"0.0.0.0:7422"' in hq2 and '"10.0.0.2:6222"' in hq2 and "route-ca.pem" in hq2
    # Its certificate names every address stores dial it at: over the WAN and over LTE.
    cert = load_cert(site.identity_dir(tmp_path / "data", "hq2") / "node.pem")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "10.0.0.2",
        "172.16.0.2",
    }
    assert not (tmp_path / "data" / "hq2" / "identity" / "nkey.seed").exists()  # no client


def test_status_names_the_uplink_from_the_leaf_address(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(HQ_NODES_TOML)
    assert _init(tmp_path / "data", "--from", str(tmp_path / "site.toml")) == 0
    table = load_site(tmp_path / "data").uplink_table("s1/t1")
    lte = read_uplink({"leafs": [{"ip": "172.16.0.3", "port": 7422, "rtt": "9ms"}]}, table)
    assert (lte.uplink, lte.hub, lte.connected) == ("lte", "hq3", True)
    assert lte.describe() == "lte via hq3 (172.16.0.3:7422, rtt 9ms)"
    assert read_uplink({"leafs": []}, table).describe() == "no link to HQ"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ('[uplinks.lte]\nhq9 = "172.16.0.9"\n', "names no HQ node"),
        ('[hq]\nnodes = { s1 = "10.0.0.2" }\n', "the name of HQ or of a store"),
        ('[uplinks.lte]\nhq = "172.16.0.300"\n', "lte:hq"),
    ],
)
def test_bad_hq_nodes_and_uplinks_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: str, says: str
) -> None:
    (tmp_path / "site.toml").write_text('[stores.s1]\ntills = ["t1"]\n' + extra)
    assert _init(tmp_path / "data", "--from", str(tmp_path / "site.toml")) == 2
    assert says in capsys.readouterr().err


def test_the_deploy_samples_are_what_a_site_of_that_layout_runs(tmp_path: Path) -> None:
    # broker.samples calls the config factories itself (broker imports no replicas);
    # this shows a site laid out like the samples renders the very same confs.
    site = init_site(
        tmp_path,
        {store: list(tills) for store, tills in samples.STORES.items()},
        hosts={
            **samples.HUBS,
            **{f"{s}/{t}": a for s, tills in samples.STORES.items() for t, a in tills.items()},
        },
        hq_nodes=[n for n in samples.HUBS if n != "hq"],
        uplinks={"lte": samples.LTE},
    ).model_copy(update={"public_keys": samples.sample_public_keys()})
    seed = tmp_path / "sample.seed"
    Nkey.generate().save_seed(seed)
    expected = samples.sample_configs()
    for node in (*samples.HUBS, samples.TILL):
        folder = samples.DATA / node / "identity"
        tls = TlsFiles(folder / "ca.pem", folder / "node.pem", folder / "node.key")
        identity = NodeIdentity(folder, tls, seed, samples.route_identity(node))
        text = render_config(site.server_config(node, identity))
        text = text.replace(load_seed(seed).seed, samples.LEAF_SEED_PLACEHOLDER)
        assert text == expected[f"{node.replace('/', '-')}.conf"], node
