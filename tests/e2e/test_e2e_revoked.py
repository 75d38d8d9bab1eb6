"""HQ revokes a stolen till, with real processes (issue 14): its earlier sales stay in
every digest; what it sells after the cut replicates everywhere but is state nowhere,
and the store and HQ agree on one digest per store."""

from __future__ import annotations

import sqlite3

from core.fold import FLAG_REVOKED
from tests.e2e.harness import Mesh, split_id

T2 = "s1/t2"


def _on_disk(mesh: Mesh, rid: str, cut: int) -> tuple[list[int], list[int]]:
    """t2's sale seqs `rid` holds as events, and those folded into its state."""
    db = mesh.site.data_dir(mesh.root, rid) / "log.db"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        held = conn.execute(
            "SELECT seq, flags FROM events WHERE origin = ? AND type = 'sale.completed'", (T2,)
        ).fetchall()
        folded = conn.execute("SELECT seq FROM st_sales WHERE origin = ?", (T2,)).fetchall()
    finally:
        conn.close()
    assert all(bool(f & FLAG_REVOKED) == (s > cut) for s, f in held), (rid, held)
    return sorted(s for s, _ in held), sorted(s for (s,) in folded)


async def test_a_revoked_tills_later_sales_are_state_nowhere(mesh: Mesh) -> None:
    await mesh.sell_everywhere(mesh.tills, rounds=2)
    await mesh.wait_converged()
    cut = mesh.oracle.heads()[T2]  # t2's last genuine sale
    hq = mesh["hq"]
    r = await mesh.client("hq").post(
        f"{hq.url}/keys/{T2}/revoke", json={"after_seq": cut, "reason": "till stolen"}
    )
    assert r.status_code == 201, r.text
    stolen = await mesh.sell(T2, 3)  # the thief sells on with t2's key and credentials
    for sale_id in stolen:  # acknowledged by t2's API, but not sales of the chain's
        assert split_id(sale_id)[1] > cut
        del mesh.oracle.sales[sale_id]
    await mesh.sell_everywhere(["s1/t1", "s1/t3"], rounds=1)
    await mesh.wait_converged()  # one digest per store, the acknowledged sales as state
    genuine = list(range(1, cut + 1))
    for rid in ("hq", "s1/t1", "s1/t3"):
        held, folded = _on_disk(mesh, rid, cut)
        assert [s for s in held if s > cut] and set(folded) <= set(genuine), rid
