"""A site made before events were signed gets signing keys in a rolling upgrade, with
real processes (issue 14, item 6): every replica runs unsigned and sells, `site keys
--add` gives each a key, then the replicas are restarted one at a time. An upgraded till
and unsigned ones replicate both ways in between; each upgraded one vouches for its
unsigned history with one `log.signed` checkpoint; at the end no event is lost, every
digest is one, and `log verify --site` checks every log's signatures without a defect."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

from tests.e2e.harness import Mesh, run_cli
from tests.legacy_site import unsign_site

T1, T2, HQ = "s1/t1", "s1/t2", "hq"


def _checkpoints(mesh: Mesh, rid: str) -> dict[str, int]:
    db = mesh[rid].data_dir / "log.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT origin, seq FROM events WHERE type = 'log.signed'")
        return dict(rows.fetchall())
    finally:
        conn.close()


async def _restart(mesh: Mesh, rid: str) -> None:
    assert not await asyncio.to_thread(mesh[rid].stop)
    await mesh.start(rid, fresh=False)


async def _verify(mesh: Mesh, rid: str) -> dict[str, object]:
    db = str(mesh[rid].data_dir / "log.db")
    report: dict[str, object] = json.loads(
        await run_cli("log", "verify", db, "--site", str(mesh.root), "--json")
    )
    return report


async def test_an_unsigned_site_upgrades_one_replica_at_a_time(tmp_path: Path) -> None:
    mesh = Mesh(tmp_path, {"s1": ["t1", "t2"]})
    unsign_site(mesh.root)  # as `site init` wrote it before signing keys
    try:
        await mesh.start()
        await mesh.sell_everywhere(mesh.tills, rounds=2)
        await mesh.wait_converged()
        heads = mesh.oracle.heads()
        before = await _verify(mesh, T2)
        (finding,) = before["findings"]  # type: ignore[misc]
        assert finding["detail"].endswith("site.json has no signing keys (a site made before them)")

        await run_cli("site", "keys", "--data", str(mesh.root), "--add",
                      "--bundles", str(tmp_path / "bundles"))  # fmt: skip
        await _restart(mesh, T1)  # t1 signs; t2 and HQ still run unsigned
        assert _checkpoints(mesh, T1) == {T1: heads[T1] + 1}
        await mesh.sell_everywhere(mesh.tills, rounds=2)  # both ways, mid-upgrade
        statuses = await mesh.wait_converged()
        assert all(s["quarantined"] == 0 for s in statuses.values())
        await mesh.check_on_disk(statuses)

        for rid in (T2, HQ):
            await _restart(mesh, rid)
        await mesh.sell_everywhere(mesh.tills, rounds=1)
        statuses = await mesh.wait_converged()
        await mesh.check_on_disk(statuses)  # every acked sale once, one digest, verify OK
        for rid in (T1, T2, HQ):
            assert set(_checkpoints(mesh, rid)) == {T1, T2, HQ}
            report = await _verify(mesh, rid)
            kinds = {f["kind"] for f in report["findings"]}  # type: ignore[attr-defined]
            assert report["ok"] and "unsigned" not in kinds and "signatures" not in kinds
    finally:
        left = await mesh.close()
        assert not left, f"processes left running: {left}"
