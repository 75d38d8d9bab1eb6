"""How the demo reaches each replica's HTTP API: its URL and the client that gets there.

The plain demo's replicas listen on loopback with no API tokens: one client serves them
all. On emulated machines (`demo --lan`) this process cannot reach a replica's address,
and a replica on a network address refuses requests without a token: each replica is
reached through a relay socket into its machine (`netlab.relay`), with its own token.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import httpx

from replicas.site import Site

__all__ = ["ApiAccess"]

TIMEOUT = httpx.Timeout(10.0, connect=3.0)  # a call may pass a shorter one


class ApiAccess:
    """Clients are made on first use (inside the demo's event loop); `aclose` them all."""

    def __init__(
        self,
        site: Site,
        sockets: Mapping[str, Path] | None = None,
        tokens: Mapping[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.site = site
        self.ca_file = ca_file  # the site CA, for APIs over https (`Site.api_tls`)
        self.sockets, self.tokens = dict(sockets or {}), dict(tokens or {})
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def url(self, rid: str, path: str = "") -> str:
        """`rid`'s API URL (+ `path`); through a relay, the host part is only a name."""
        return f"{self.site.api_url(rid)}{path}"

    def client(self, rid: str) -> httpx.AsyncClient:
        """The client that reaches `rid`: its own (socket, token), else the shared one."""
        key = rid if rid in self.sockets or rid in self.tokens else None
        if key not in self._clients:
            self._clients[key] = self._new_client(rid if key else None)
        return self._clients[key]

    def _new_client(self, rid: str | None) -> httpx.AsyncClient:
        verify = self.site.api_verify(self.ca_file) if self.ca_file else True
        if rid is None:
            return httpx.AsyncClient(timeout=TIMEOUT, verify=verify)
        socket = str(self.sockets[rid]) if rid in self.sockets else None
        token = self.tokens.get(rid)
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket, verify=verify),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=TIMEOUT,
        )

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()
