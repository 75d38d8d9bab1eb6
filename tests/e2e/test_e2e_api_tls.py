"""A site whose APIs speak HTTPS (`Site.api_tls`): every replica serves its API and till
page with its site certificate, real `tillmesh` processes. A client holding the site CA
sells and reads; plain HTTP gets no answer, and a client that does not trust the site
CA refuses the certificate, so tokens never cross a store's LAN in clear."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from broker.subjects import HQ
from replicas.site import save_site
from tests.e2e.harness import Mesh

T1 = "s1/t1"


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[Mesh]:
    mesh = Mesh(tmp_path, {"s1": ["t1"]})
    mesh.site = mesh.site.model_copy(update={"api_tls": True})
    save_site(mesh.root, mesh.site)
    for proc in mesh.procs.values():
        proc.url = mesh.site.api_url(proc.rid)
    try:
        await mesh.start()
        yield mesh
    finally:
        assert not await mesh.close()


async def test_a_site_with_api_tls_serves_https_to_clients_that_trust_its_ca(mesh: Mesh) -> None:
    till = mesh.site.api_url(T1)
    assert till.startswith("https://") and mesh.site.api_url(HQ).startswith("https://")
    (sale_id,) = await mesh.sell(T1)  # through the harness's client: the site CA
    r = await mesh.http.get(f"{till}/sales/{sale_id}")
    assert r.status_code == 200 and r.json()["id"] == sale_id
    assert (await mesh.http.get(f"{mesh.site.api_url(HQ)}/healthz")).status_code == 200
    plain = till.replace("https://", "http://")
    async with httpx.AsyncClient(timeout=5) as stranger:
        with pytest.raises(httpx.HTTPError):  # no TLS, no answer
            await stranger.get(f"{plain}/healthz")
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await stranger.get(f"{till}/healthz")  # the system's CAs do not know the site's
    context = ssl.create_default_context(cafile=str(mesh.root / "ca.pem"))
    async with httpx.AsyncClient(timeout=5, verify=context) as ops:
        status = (await ops.get(f"{till}/status", params={"digest": False})).json()
        assert status["replica_id"] == T1 and status["sales"]["sales"] == 1


async def test_tillmesh_status_reads_an_https_replica_through_the_site_ca(mesh: Mesh) -> None:
    cmd = [sys.executable, "-m", "replicas.cli.main", "status", "--data", str(mesh.root),
           "--replica", T1, "--json"]  # fmt: skip
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replica_id"] == T1
