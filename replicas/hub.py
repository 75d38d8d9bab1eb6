"""An HQ hub node without the HQ replica: `tillmesh hq --node hq2` on HQ's second and
third machines.

HQ's hub is a nats-server cluster; stores' leaf links reach any of its nodes, so losing
one HQ machine stops no store from syncing with the rest of HQ. The HQ replica (log,
ingest, reports) runs on node `hq`; the other nodes only carry traffic, so this is
their nats-server, supervised like a replica's, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from broker.keyring import load_identity
from broker.server import EmbeddedNatsServer
from replicas.errors import UnknownReplica
from replicas.process import DataDirLock, ServerSupervisor
from replicas.site import Site

__all__ = ["HubNode"]


class HubNode:
    """One hub node's nats-server. `async with HubNode(...)`, or `start()` / `stop()`."""

    def __init__(self, site: Site, node: str, root: Path) -> None:
        if node not in site.hq_nodes:
            raise UnknownReplica(node, site.hq_nodes)
        self.site, self.node, self.root = site, node, root
        self.data_dir = site.data_dir(root, node)
        self.server: EmbeddedNatsServer | None = None
        self.supervisor: ServerSupervisor | None = None
        self._lock: DataDirLock | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HubNode:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = DataDirLock(self.data_dir, self.node)  # one process per node
        try:
            identity = load_identity(self.site.identity_dir(self.root, self.node))
            config = self.site.server_config(self.node, identity)
            self.server = EmbeddedNatsServer(config, self.data_dir / "nats")
            await self.server.start()
        except BaseException:
            self._lock.release()
            raise
        self.supervisor = ServerSupervisor(self.server, self.node)
        self._task = asyncio.create_task(self.supervisor.run(), name="supervise-nats")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            if self.server is not None:
                await self.server.stop()
        finally:
            if self._lock is not None:
                self._lock.release()
