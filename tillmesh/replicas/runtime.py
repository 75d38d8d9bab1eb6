"""A running replica: log + its own nats-server + sync + local HTTP API, in one process.

Start order follows what must keep working when everything else fails: the log
first (a till sells from it alone), then its nats-server (supervised: restarted if
it dies), then the NATS client (reconnects forever), the sync transport, and the
HTTP API last. Shutdown runs the other way round.

A till whose log is empty may be a replacement for a till that already sold: if it
started numbering its own events from 1 again, its new events would collide with
the old ones (equivocation). So an empty till waits until HQ or every other till
of its store has told it how far its own origin goes, and catches up first, unless
it is started with `fresh=True` (a brand-new till).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import nats
import uvicorn
from nats.aio.client import Client

from tillmesh.broker.credentials import Credentials
from tillmesh.broker.server import EmbeddedNatsServer, connect_options
from tillmesh.broker.subjects import HQ
from tillmesh.conflict.state import StoreState
from tillmesh.core.clock import HybridClock, system_wall_ms
from tillmesh.core.events import store_of
from tillmesh.core.log import EventLog
from tillmesh.replicas.protocol import holds
from tillmesh.replicas.site import Site
from tillmesh.replicas.sync import SyncEngine
from tillmesh.replicas.sync_config import SyncConfig
from tillmesh.replicas.transport import SyncTransport

__all__ = ["Replica"]

log = logging.getLogger(__name__)
SUPERVISE_EVERY = 0.5
ONLINE_WITHIN = 15.0  # seconds since HQ last announced, for the "online" light


class Replica:
    """One replica process. `async with Replica(...)`, or `start()` / `stop()`."""

    def __init__(
        self,
        site: Site,
        creds: dict[str, Credentials],
        replica_id: str,
        root: Path,
        *,
        fresh: bool = False,
        wall_ms: Callable[[], int] = system_wall_ms,
        sync_config: SyncConfig | None = None,
    ) -> None:
        self.site, self.creds, self.replica_id, self.root = site, creds, replica_id, root
        self.fresh = fresh
        self.wall_ms = wall_ms
        self.sync_config = sync_config or SyncConfig()
        self.data_dir = site.data_dir(root, replica_id)
        self.log: EventLog  # set by start()
        self.engine: SyncEngine | None = None
        self.server: EmbeddedNatsServer | None = None
        self.nc: Client | None = None
        self.transport: SyncTransport | None = None
        self._api: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.ready = asyncio.Event()  # set once the API serves (after history restore)

    # --- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Replica:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = await self._open_log()
        self.engine = SyncEngine(
            self.replica_id, holds(self.replica_id), self.sync_config, vv=self.log.version_vector()
        )
        try:
            await self._start_server()
            await self._connect()
        except BaseException:  # e.g. port taken: close the log, or its thread keeps us alive
            await self._close_network()
            await self.log.close()
            raise
        self._tasks.append(asyncio.create_task(self._supervise(), name="supervise-nats"))
        self._tasks.append(asyncio.create_task(self._serve_when_ready(), name="api"))

    async def _open_log(self) -> EventLog:
        clock = HybridClock(self.wall_ms, max_offset_ms=self.site.max_clock_offset_ms)
        return await EventLog.open(
            self.data_dir / "log.db",
            self.replica_id,
            StoreState(price_policy=self.site.price_policy),
            clock=clock,
            in_scope=holds(self.replica_id),
            wall_ms=self.wall_ms,
        )

    async def _start_server(self) -> None:
        config = self.site.server_config(self.replica_id, self.creds)
        self.server = EmbeddedNatsServer(config, self.data_dir / "nats")
        await self.server.start()

    async def _connect(self) -> None:
        assert self.server is not None and self.engine is not None
        transport: SyncTransport | None = None

        async def reconnected() -> None:
            if transport is not None:
                await transport.on_reconnected()

        options = connect_options(
            self.server.client_url, self.creds[self.replica_id], self.replica_id
        )
        self.nc = await nats.connect(
            **options, reconnected_cb=reconnected, error_cb=_log_nats_error
        )
        transport = SyncTransport(self.nc, self.log, self.engine)
        await transport.start()
        self.transport = transport

    async def stop(self) -> None:
        self._stopping = True
        if self._api is not None:
            self._api.should_exit = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_network()
        await self.log.close()

    async def _close_network(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):  # best effort: the server may be gone already
                await self.nc.close()
        if self.server is not None:
            await self.server.stop()

    # --- supervision --------------------------------------------------------------

    async def _supervise(self) -> None:
        """Restart our nats-server if it dies; the client reconnects by itself."""
        assert self.server is not None
        delay = SUPERVISE_EVERY
        while not self._stopping:
            await asyncio.sleep(delay)
            if self.server.running:
                delay = SUPERVISE_EVERY
                continue
            log.warning("%s: nats-server exited; restarting", self.replica_id)
            try:
                await self.server.restart()
            except Exception as e:  # keep selling; try again, backing off
                log.error("%s: nats-server restart failed: %s", self.replica_id, e)
                delay = min(delay * 2, 10.0)

    # --- history restore, then API ----------------------------------------------------

    async def _serve_when_ready(self) -> None:
        await self._await_own_history()
        config = uvicorn.Config(
            self._app(),
            host=self.site.host,
            port=self.site.ports[self.replica_id].api,
            log_level="warning",
            lifespan="off",
        )
        self._api = _QuietServer(config)
        self.ready.set()
        await self._api.serve()

    def _app(self) -> Any:
        from tillmesh.replicas.api import create_app  # FastAPI import is slow
        from tillmesh.replicas.api_link import link_router

        app = create_app(self)
        app.include_router(link_router(self))
        return app

    async def _await_own_history(self) -> None:
        if self.fresh or self.replica_id == HQ or self.log.head(self.replica_id)[0] > 0:
            return
        log.warning(
            "%s: empty log; waiting for HQ or peers to confirm our history", self.replica_id
        )
        while not self._history_confirmed():
            await asyncio.sleep(0.2)

    def _history_confirmed(self) -> bool:
        assert self.engine is not None
        status = self.engine.status(time.monotonic())
        heard = {p for p, s in status.peers.items() if s.age != float("inf")}
        store = store_of(self.replica_id)
        others = {f"{store}/{t}" for t in self.site.stores.get(store or "", [])} - {self.replica_id}
        if HQ not in heard and not others <= heard:
            return False
        own = self.log.head(self.replica_id)[0]
        return all(status.peers[p].vv.get(self.replica_id, 0) <= own for p in heard)

    # --- the store's link to HQ ------------------------------------------------------

    async def set_hq_link(self, enabled: bool) -> bool:
        """Switch this till's leaf link to HQ off or on (a nats-server config reload).

        With every till of a store switched off, the store is cut from HQ while the
        other stores stay connected: maintenance, a metered link, or a drill.
        """
        if self.server is None or not self.server.config.leaf_remotes:
            return False
        remotes = tuple(replace(r, disabled=not enabled) for r in self.server.config.leaf_remotes)
        await self.server.reload(replace(self.server.config, leaf_remotes=remotes))
        return True

    def hq_link_enabled(self) -> bool:
        remotes = self.server.config.leaf_remotes if self.server else ()
        return bool(remotes) and not any(r.disabled for r in remotes)

    # --- what the HTTP API asks (api.ReplicaHandle) ---------------------------------------

    def sync_status(self) -> dict[str, object]:
        if self.engine is None:
            return {}
        status = asdict(self.engine.status(time.monotonic()))
        for peer in status["peers"].values():
            if peer["age"] == float("inf"):
                peer["age"] = None  # JSON has no infinity
        status["nats_server_pid"] = self.server.pid if self.server and self.server.running else None
        return status

    def online(self) -> bool:
        if self.engine is None or self.replica_id == HQ:
            return self.nc is not None and self.nc.is_connected
        hq = self.engine.status(time.monotonic()).peers.get(HQ)
        return hq is not None and hq.age < ONLINE_WITHIN

    def unsynced_to_hq(self) -> int:
        if self.engine is None or self.replica_id == HQ:
            return 0
        return self.log.head(self.replica_id)[0] - self.engine.receipts().get(HQ, 0)


class _QuietServer(uvicorn.Server):
    """uvicorn, minus its signal handling: the replica process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _log_nats_error(e: Exception) -> None:
    log.warning("nats: %s", e)
