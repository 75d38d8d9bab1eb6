"""The store network as an attacker on a store's LAN finds it (issue: "tried as an
attacker"): every replica on its own emulated machine, real nats-servers and tillmesh
processes, a machine `mallory` plugged into store s1's LAN holding s1/t1's bundle.

Refused: plain-text NATS on route and leaf ports; client ports from the network (they
listen on loopback); a client without credentials; another till's key publishing on a
third till's subjects; t1's key logging in to HQ as a client; a server with a foreign
certificate joining s1's routes. A leaf made from t1's own bundle gets in as s1, and
sees HQ's traffic and no other store's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from broker.server import nats_server_binary
from broker.tls import SiteCA, write_tls_files
from replicas.demo.netlab.machines import Host
from replicas.demo.netlab.network import Network
from replicas.demo.netlab.processes import first_line
from tests.e2e.harness import Mesh, wait_until
from tests.e2e.lan import HQ_ADDRESS, LanSite, lan_site

STORES = {"s1": ["t1", "t2", "t3"], "s2": ["t1"]}
MALLORY = "10.77.1.66"
ROOT = Path(__file__).resolve().parents[2]


def _start(host: Host, *args: str) -> subprocess.Popen[bytes]:
    """One `tests.e2e.attacker` command, started on `host`."""
    argv = [sys.executable, "-m", "tests.e2e.attacker", *args]
    return host.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)


def _run(host: Host, *args: str, timeout: float = 20.0) -> str:
    """One `tests.e2e.attacker` command on `host`; the line it printed."""
    return _said(_start(host, *args), timeout)


def _said(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> str:
    said = first_line(proc, timeout)
    proc.wait(timeout=5)
    if proc.stdout is not None:
        said += proc.stdout.read().decode(errors="replace")[-500:]
        proc.stdout.close()
    return said.strip()


def _seed(site: LanSite, rid: str) -> str:
    return str(site.root / "site" / rid / "identity" / "nkey.seed")


def _rogue_server(host: Host, tmp: Path, conf: str) -> subprocess.Popen[bytes]:
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{host.name}.conf"
    path.write_text(conf)
    log = tmp / f"{host.name}.log"
    return host.popen([str(nats_server_binary()), "-c", str(path), "-l", str(log)])


async def test_an_attacker_on_the_store_lan_gets_nowhere(netns: Network, tmp_path: Path) -> None:
    site = lan_site(netns, tmp_path, STORES)
    mallory = netns.host("mallory", on={"s1": MALLORY})
    t1, t1_addr = site.host("s1/t1"), "10.77.1.11"
    async with site.mesh() as mesh:
        await mesh.sell_everywhere(mesh.tills, rounds=1)
        await mesh.wait_converged(timeout=60)

        # No plain text anywhere: the route and leaf ports speak TLS only.
        assert _run(mallory, "plain", t1_addr, "6222").startswith("no PONG")
        assert _run(mallory, "plain", HQ_ADDRESS, "7422").startswith("no PONG")
        # Client ports are the machine's own: nothing listens for them on the network.
        for address in (t1_addr, HQ_ADDRESS):
            assert "refused" in _run(mallory, "plain", address, "4222")

        # On t1's own machine: no credentials, or t2's key on t3's subjects, are refused.
        url = "nats://127.0.0.1:4222"
        assert "Authorization Violation" in _run(t1, "publish", url, "-", "tm.ev.s1.t3")
        forged = _run(t1, "publish", url, _seed(site, "s1/t2"), "tm.ev.s1.t3")
        assert "permissions violation" in forged.lower(), forged
        allowed = _run(t1, "publish", url, _seed(site, "s1/t2"), "tm.ev.s1.t2")
        assert allowed == "published", allowed  # the key works: the refusal was the subject
        # t1's key is a leaf user at HQ, never a client (even on HQ's own machine).
        at_hq = _run(site.host("hq"), "publish", url, _seed(site, "s1/t1"), "tm.ev.hq")
        assert "Authorization Violation" in at_hq, at_hq

        await _a_foreign_server_cannot_join_the_routes(site, mallory, tmp_path)
        await _t1s_bundle_makes_a_leaf_of_s1_only(site, mesh, mallory, tmp_path)


async def _a_foreign_server_cannot_join_the_routes(site: LanSite, mallory: Host, tmp: Path) -> None:
    """Neither with a certificate of its own CA, nor with another store's till's genuine
    site certificates (s2/t1's bundle): routes take only their cluster's CA."""
    foreign = write_tls_files(tmp / "foreign", (ca := SiteCA.generate("evil")).cert,
                              ca.issue_server("mallory", ips=[MALLORY]))  # fmt: skip
    s2_t1 = site.root / "site" / "s2" / "t1" / "identity"
    stolen = [(s2_t1 / "route.pem", s2_t1 / "route.key", s2_t1 / "route-ca.pem"),
              (s2_t1 / "node.pem", s2_t1 / "node.key", s2_t1 / "ca.pem")]  # fmt: skip
    attempts = [(foreign.cert_file, foreign.key_file, foreign.ca_file), *stolen]
    for k, (cert, key, ca_file) in enumerate(attempts):
        before = _lines_naming(site, "s1/t1", MALLORY)
        conf = f"""
listen: 127.0.0.1:4222
cluster {{
  name: "store-s1"
  listen: "{MALLORY}:6222"
  tls {{ cert_file: "{cert}", key_file: "{key}", ca_file: "{ca_file}", verify: true }}
  routes: ["nats-route://10.77.1.11:6222"]
}}
"""
        rogue = _rogue_server(mallory, tmp / f"rogue{k}", conf)
        try:  # t1 logs each failed handshake; the route never forms
            await wait_until(
                lambda b=before: _more_lines(site, "s1/t1", MALLORY, b),
                f"t1 to refuse rogue route {k}", 20,
            )  # fmt: skip
        finally:
            rogue.terminate()
            rogue.wait(5)


def _lines_naming(site: LanSite, rid: str, word: str) -> int:
    log = site.root / "site" / rid / "nats" / f"{rid.replace('/', '-')}.log"
    return sum(word in line and "TLS" in line for line in log.read_text().splitlines())


async def _more_lines(site: LanSite, rid: str, word: str, before: int) -> bool:
    return _lines_naming(site, rid, word) > before


async def _t1s_bundle_makes_a_leaf_of_s1_only(
    site: LanSite, mesh: Mesh, mallory: Host, tmp: Path
) -> None:
    identity = site.root / "site" / "s1" / "t1" / "identity"
    seed = (identity / "nkey.seed").read_text().strip()
    conf = f"""
server_name: "mallory-leaf"
listen: 127.0.0.1:4223
leafnodes {{
  reconnect: "1s"
  remotes: [{{
    urls: ["nats-leaf://{HQ_ADDRESS}:7422"]
    nkey: "{seed}"
    tls {{ cert_file: "{identity / "node.pem"}", key_file: "{identity / "node.key"}",
           ca_file: "{identity / "ca.pem"}" }}
  }}]
}}
"""
    (tmp / "leaf").mkdir()
    _rogue_server(mallory, tmp / "leaf", conf)
    listening = _start(mallory, "listen", "nats://127.0.0.1:4223", "-", "tm.>", "8")
    for _ in range(4):  # s2 sells while mallory listens: HQ hears it, mallory must not
        await mesh.sell("s2/t1", 2)
        await asyncio.sleep(1)
    heard = await asyncio.to_thread(_said, listening)
    assert "tm.vv.hq" in heard, heard  # the link works: HQ's announcements come down
    assert ".s2." not in heard, heard  # and nothing of store s2 does
    # Nor does it speak for another till of its own store at HQ: t1's leaf carries t1's
    # vector (the control) and not t2's, as a listener on HQ's own machine sees.
    hq_seed = str(site.root / "site" / "hq" / "identity" / "nkey.seed")
    at_hq = _start(site.host("hq"), "listen", "nats://127.0.0.1:4222", hq_seed, "tm.vv.s1.*", "6")
    for _ in range(3):
        for subject in ("tm.vv.s1.t1", "tm.vv.s1.t2"):
            _run(mallory, "publish", "nats://127.0.0.1:4223", "-", subject)
        await asyncio.sleep(1)
    heard_at_hq = await asyncio.to_thread(_said, at_hq)
    assert "tm.vv.s1.t1 FORGED" in heard_at_hq, heard_at_hq  # the leaf works as t1
    assert "tm.vv.s1.t2 FORGED" not in heard_at_hq, heard_at_hq  # and only as t1
