"""Calls the conflict tests over real replicas share: a POST that must succeed, a cash
sale recorded in the mesh's convergence oracle, and a replica's conflicts by id."""

from __future__ import annotations

from typing import Any

from tests.e2e.harness import Mesh


async def post(mesh: Mesh, rid: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = await mesh.http.post(f"{mesh[rid].url}{path}", json=body)
    assert r.status_code == 201, f"POST {path} on {rid}: {r.status_code} {r.text}"
    return r.json()


async def sell(mesh: Mesh, rid: str, sku: str, qty: int, receipt: str | None = None) -> str:
    line = {"sku": sku, "qty": qty, "unit_price": 100}
    body: dict[str, Any] = {"lines": [line], "payments": [{"method": "cash", "amount": 100 * qty}]}
    if receipt is not None:
        body["receipt"] = receipt
    out = await post(mesh, rid, "/sales", body)
    mesh.oracle.record(out["sale_id"], out["receipt"], out["total"])  # convergence oracle
    return str(out["sale_id"])


async def conflicts(mesh: Mesh, rid: str, *, open_only: bool = False) -> dict[str, Any]:
    r = await mesh.http.get(f"{mesh[rid].url}/conflicts", params={"open": open_only})
    assert r.status_code == 200
    return {c["id"]: c for c in r.json()}
