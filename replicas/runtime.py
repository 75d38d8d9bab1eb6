"""A running replica: log + its own nats-server + sync + local HTTP API, in one process.

Start order follows what must keep working when everything else fails: the log
first (a till sells from it alone), then its nats-server (supervised: restarted if
it dies), then the NATS client (reconnects forever), the sync transport, and the
HTTP API last. Shutdown runs the other way round. Before any of it the replica locks
its data folder: a second copy of the same replica would share the log and answer
as the same till.

A replica with none of its own events in its log may replace one that already wrote
(a till swapped, HQ's back-office PC or disk lost): if it numbered its own events
from 1 again, its new events would collide with the old ones (equivocation; peers
quarantine them as a broken hash chain). So it keeps its API closed until the
peers that hold its origin have told it how far that origin goes, and catches up
first, unless it is started with `fresh=True` (a brand-new till or a new site's HQ).
Sync runs meanwhile, so waiting replicas never wait on each other's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import nats
import uvicorn
from nats.aio.client import Client

from broker.errors import BrokerError
from broker.keyring import NodeIdentity, load_identity
from broker.server import EmbeddedNatsServer, connect_options
from broker.subjects import HQ
from conflict.state import StoreState
from core.clock import HybridClock, system_wall_ms
from core.errors import TillmeshError
from core.events import store_of
from core.log import EventLog
from replicas.api.tokens import TOKENS_FILE, TokenStore
from replicas.cache import StateCache
from replicas.errors import ApiUnavailable, ApiUnprotected, SiteFileError
from replicas.metrics import ReplicaMetrics
from replicas.ops.keeper import KEEP_CHECKPOINTS, CheckpointKeeper, KeepCheckpoints
from replicas.payments.adapter import CardProcessor, HttpAcquirer
from replicas.payments.forwarder import Forwarder
from replicas.payments.reversals import FILE as REVERSALS_FILE
from replicas.payments.reversals import PendingReversals
from replicas.process import DataDirLock, ServerSupervisor
from replicas.signer import check_signing_key, open_signing, rotate_signing_key
from replicas.site import Site, is_loopback
from replicas.sync.config import SyncConfig
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import holds
from replicas.sync.transport import SyncTransport
from replicas.uplink import UplinkState, leaf_names, read_leaves, read_uplink

__all__ = ["Replica"]

log = logging.getLogger(__name__)
ONLINE_WITHIN = 15.0  # seconds since HQ last announced, for the "online" light
API_STOP_TIMEOUT = 5.0  # for uvicorn to close its socket and connections on stop
UPLINK_EVERY = 1.0  # seconds between looks at which uplink the leaf link uses
API_GRACE = 2  # whole seconds (uvicorn's unit) open requests get within that


class Replica:
    """One replica process. `async with Replica(...)`, or `start()` / `stop()`."""

    def __init__(
        self,
        site: Site,
        replica_id: str,
        root: Path,
        *,
        fresh: bool = False,
        wall_ms: Callable[[], int] = system_wall_ms,
        sync_config: SyncConfig | None = None,
        metrics: ReplicaMetrics | None = None,
        checkpoints: KeepCheckpoints | None = KEEP_CHECKPOINTS,  # None: take none
    ) -> None:
        self.site, self.replica_id, self.root = site, replica_id, root
        # Its own registry unless one is passed: replicas sharing a process stay apart.
        self.metrics = metrics or ReplicaMetrics()
        self.fresh = fresh
        self.wall_ms = wall_ms
        self.sync_config = sync_config or SyncConfig()
        self.data_dir = site.data_dir(root, replica_id)
        self.identity: NodeIdentity  # set by start(): this machine's certificate and nkey
        self.log: EventLog  # set by start()
        self.engine: SyncEngine | None = None
        self.server: EmbeddedNatsServer | None = None
        self.nc: Client | None = None
        self.transport: SyncTransport | None = None
        self._api: uvicorn.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: DataDirLock | None = None
        self.supervisor: ServerSupervisor | None = None  # restarts our nats-server if it dies
        self.uplink = UplinkState(connected=False)  # a till's link to HQ: which uplink, hub
        self.leaves: dict[str, bool] = {}  # HQ: per till, its leaf link up on our server
        self.state_cache: StateCache  # set by start(): figures for metrics and dashboard
        self._link_on_at = float("-inf")  # when the HQ link was last switched on
        self.ready = asyncio.Event()  # set once the API listens (after history restore)
        self.failed = asyncio.Event()  # set when the replica cannot go on; see `failure`
        self.failure: TillmeshError | None = None
        self.processor: CardProcessor | None = None  # the site's acquirer, if it has one
        self._processor_key = ""  # the acquirer's API key (site acquirer_key_file), read at start
        self.reversals: PendingReversals | None = None  # a till's owed card reversals
        self.forwarder: Forwarder | None = None  # a till's: forwards its store's deferred cards
        self.keeper = (
            None
            if checkpoints is None
            else CheckpointKeeper(  # replay checkpoints
                self.data_dir / "log.db",
                lambda: sum(self.log.version_vector().values()),
                checkpoints,
            )
        )

    # --- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Replica:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Before log.db or a port is touched: a second copy must change nothing.
        self._lock = DataDirLock(self.data_dir, self.replica_id)
        try:
            self._check_api_protected()
            self.identity = load_identity(self.site.identity_dir(self.root, self.replica_id))
            # read before anything opens: an error later would leave the log's thread on
            self._processor_key = self._acquirer_key() if self.replica_id != HQ else ""
        except BaseException:
            self._lock.release()
            raise
        try:
            await self._start_parts()
        except BaseException:
            self._lock.release()
            raise

    async def _start_parts(self) -> None:
        self.log = await self._open_log()
        try:
            await self._check_signing_key()
        except BaseException:
            await self.log.close()
            raise
        self._observe_log()
        self.engine = self._new_engine()
        try:
            await self._start_server()
            await self._connect()
        except BaseException:  # e.g. port taken: close the log, or its thread keeps us alive
            await self._close_network()
            await self.log.close()
            raise
        if self.supervisor is not None:  # (an HQ ingest worker may use another's server)
            self._tasks.append(asyncio.create_task(self.supervisor.run(), name="supervise-nats"))
        self._tasks.append(asyncio.create_task(self._serve_when_ready(), name="api"))
        watch = self._watch_uplink() if self.replica_id != HQ else self._watch_leaves()
        self._tasks.append(asyncio.create_task(watch, name="links"))
        if self.replica_id != HQ:
            self._start_forwarding()
        if self.keeper is not None:
            self._tasks.append(asyncio.create_task(self.keeper.run(), name="checkpoints"))

    def _observe_log(self) -> None:
        self.log.commit_observers.append(self.metrics.on_commit)
        self.state_cache = StateCache(self.log)

    def _new_engine(self) -> SyncEngine:
        vv = self.log.version_vector()
        return SyncEngine(self.replica_id, holds(self.replica_id), self.sync_config, vv=vv)

    async def _open_log(self) -> EventLog:
        clock = HybridClock(self.wall_ms, max_offset_ms=self.site.max_clock_offset_ms)
        signer, verifier = open_signing(self.site, self.replica_id, self.identity, self.data_dir)
        return await EventLog.open(
            self.data_dir / "log.db",
            self.replica_id,
            StoreState(price_policy=self.site.price_policy),
            clock=clock,
            in_scope=holds(self.replica_id),
            wall_ms=self.wall_ms,
            signer=signer,
            verifier=verifier,
            check_in_worker=True,  # a catch-up's checking on the other core (issue 19)
        )

    async def _check_signing_key(self) -> None:
        await check_signing_key(self.log, self.replica_id, self.identity.directory)

    async def _start_server(self) -> None:
        config = self.site.server_config(self.replica_id, self.identity)
        self.server = EmbeddedNatsServer(config, self.data_dir / "nats")
        await self.server.start()
        self.supervisor = ServerSupervisor(self.server, self.replica_id)

    async def _connect(self) -> None:
        assert self.engine is not None
        transport: SyncTransport | None = None

        async def reconnected() -> None:
            if transport is not None:
                await transport.on_reconnected()

        assert self.identity.seed_file is not None  # a replica's identity has its nkey
        options = connect_options(self._nats_url(), self.identity.seed_file, self.replica_id)
        self.nc = await nats.connect(
            **options, reconnected_cb=reconnected, error_cb=_log_nats_error
        )
        transport = self._new_transport(self.nc)
        await transport.start()
        self.transport = transport

    def _nats_url(self) -> str:
        assert self.server is not None
        return self.server.client_url

    def _new_transport(self, nc: Client) -> SyncTransport:
        assert self.engine is not None
        return SyncTransport(nc, self.log, self.engine, observer=self.metrics)

    def _start_forwarding(self) -> None:
        """Card payments: the site's processor, and this till's forwarding loop."""
        if self.site.acquirer_url:
            self.processor = HttpAcquirer(
                self.site.acquirer_url, self.site.acquirer_timeout_s, self._processor_key
            )
        store = store_of(self.replica_id) or ""
        self.reversals = PendingReversals(self.data_dir / REVERSALS_FILE)
        self.forwarder = Forwarder(
            self.log, store, self.card_processor, self.wall_ms,
            every_s=self.site.card_forward_every_s, reversals=self.reversals,
            resolve_after_s=self.site.card_resolve_after_s,
        )  # fmt: skip
        self._tasks.append(asyncio.create_task(self.forwarder.run(), name="forward-cards"))

    def _acquirer_key(self) -> str:
        """The acquirer's API key from the site's `acquirer_key_file` ('' if none named:
        a processor that takes calls without one). Named and unreadable: an error."""
        if self.site.acquirer_key_file is None:
            return ""
        path = self.root / self.site.acquirer_key_file  # an absolute one stays as it is
        try:
            return path.read_text().strip()
        except OSError as e:
            raise SiteFileError(
                path, f"the acquirer's API key (acquirer_key_file): {e.strerror}"
            ) from e

    async def stop(self) -> None:
        await self._stop_api()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.processor is not None:
            await self.processor.aclose()
        try:
            await self._close_network()
            await self.log.close()
        finally:  # a failed close must not keep the replica locked for this process's life
            if self._lock is not None:
                self._lock.release()

    async def _stop_api(self) -> None:
        """Ask uvicorn to exit and give it time to: cancelled at once, it never closes its
        listening socket, and an in-process replica leaks it."""
        if self._api is None:
            return
        self._api.should_exit = True
        api = [t for t in self._tasks if t.get_name() == "api"]
        await asyncio.wait(api, timeout=API_STOP_TIMEOUT)  # then cancelled like the rest

    async def _close_network(self) -> None:
        if self.transport is not None:
            await self.transport.close()
        if self.nc is not None:
            with contextlib.suppress(Exception):  # best effort: the server may be gone already
                await self.nc.close()
        if self.server is not None:
            await self.server.stop()

    # --- the uplink in use --------------------------------------------------------------

    async def _watch_uplink(self) -> None:
        """Keep `uplink` current from our nats-server's `/leafz`; log each change, so the
        move to a backup uplink (and back) is in the till's log with its time."""
        table = self.site.uplink_table()
        while True:
            await asyncio.sleep(UPLINK_EVERY)
            assert self.server is not None
            try:
                state = read_uplink(await self.server.monitor("/leafz"), table)
            except (OSError, BrokerError, ValueError):  # our server is down: supervised
                state = UplinkState(connected=False)
            if state.uplink != self.uplink.uplink or state.hub != self.uplink.hub:
                # Worth a warning: off the preferred uplink, or the link lost.
                usual = state.uplink == "wan" or (not state.connected and not self.uplink.connected)
                log.log(logging.INFO if usual else logging.WARNING,
                        "%s: link to HQ: %s", self.replica_id, state.describe())  # fmt: skip
                self.metrics.uplink_changed()
            if state.connected and not self.uplink.connected and self.transport is not None:
                # Announce at once: what we said while the link was down reached no one,
                # and an HQ started meanwhile pulls only on a vector it hears (the next
                # periodic one is up to `announce_interval` away; measured in the PG
                # bench, issue 16: 2.6-4.9 s of a 7 s catch-up waited for it).
                self.transport.driver.connected()
            self.uplink = state

    async def _watch_leaves(self) -> None:
        """HQ: keep `leaves` current from our server's `/leafz`: a till whose process (and
        so its nats-server) stops drops its leaf link at once, seconds before its
        announcements are missed. Only links to this hub node show here."""
        names = leaf_names(self.site.stores)
        while True:
            assert self.server is not None
            try:
                self.leaves = read_leaves(await self.server.monitor("/leafz"), names)
            except (OSError, BrokerError, ValueError):  # our server is down: supervised
                self.leaves = dict.fromkeys(names.values(), False)
            await asyncio.sleep(UPLINK_EVERY)

    @property
    def uplink_names(self) -> list[str]:
        """The uplinks a till's leaf link may use, as the site names them (none at HQ)."""
        if self.replica_id == HQ:
            return []
        return list(dict.fromkeys(u for u, _, _ in self.site.uplink_table(self.replica_id)))

    # --- history restore, then API ----------------------------------------------------

    async def _serve_when_ready(self) -> None:
        await self._await_own_history()
        if self.replica_id in self.site.unsigned_history:  # a site from before signing
            checkpoint = await self.log.sign_history()
            if checkpoint is not None:
                log.warning("%s: its %d unsigned events vouched for by %s (log.signed)",
                            self.replica_id, checkpoint.seq - 1, checkpoint.id)  # fmt: skip
        host, port = self.site.host_of(self.replica_id), self.site.node(self.replica_id).api
        await self._serve_api(self._app(), host, port)

    async def _serve_api(self, app: Any, host: str, port: int) -> None:
        """Serve `app` until stopped; `ready` once the port is bound, `failed` if not."""
        tls = self.identity.tls if self.site.api_tls else None
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=API_GRACE,
            ssl_certfile=str(tls.cert_file) if tls else None,
            ssl_keyfile=str(tls.key_file) if tls else None,
        )  # fmt: skip
        self._api = _QuietServer(config, started=self.ready.set)
        try:
            await self._api.serve()
        except SystemExit:  # uvicorn's answer to a port it cannot bind; it logged why
            self.failure = ApiUnavailable(host, port)
            self.failed.set()

    def _check_api_protected(self) -> None:
        """An API reachable from the network must not be open: refuse to start it so."""
        host = self.site.host_of(self.replica_id)
        if not is_loopback(host) and not self.tokens.records():
            raise ApiUnprotected(self.replica_id, host)

    @property
    def tokens(self) -> TokenStore:
        return TokenStore(self.data_dir / TOKENS_FILE)

    def _app(self) -> Any:
        from replicas.api.app import create_app  # FastAPI import is slow
        from replicas.api.auth import Access, CashierLimits
        from replicas.api.common import Shop
        from replicas.api.link import link_router
        from replicas.dashboard import mount_dashboard
        from replicas.metrics import metrics_router

        loopback = is_loopback(self.site.host_of(self.replica_id))
        limits = CashierLimits(self.site.cashier_discount_limit_bp, self.site.cashier_void_within_s)
        access = Access(self.tokens, loopback, limits)
        store = store_of(self.replica_id) or ""
        shop = Shop(self.site.store_names.get(store, ""), self.site.tax_mode)
        app = create_app(self, access=access, shop=shop)
        app.include_router(link_router(self))
        app.include_router(metrics_router(self, self.metrics, self.state_cache))
        if self.replica_id == HQ:
            stores, one_hub = self.site.stores, not self.site.hq_nodes
            mount_dashboard(app, self, stores, self.state_cache, leaves_known=one_hub)
        return app

    async def _await_own_history(self) -> None:
        if self.fresh or self.log.head(self.replica_id)[0] > 0:
            return
        log.warning(
            "%s: no own events in the log; API closed until %s confirm our history "
            "(start with --fresh only if this replica never ran before)",
            self.replica_id,
            "one till of every store" if self.replica_id == HQ else "HQ or all store peers",
        )
        while not self._history_confirmed():
            await asyncio.sleep(0.2)

    def _history_confirmed(self) -> bool:
        """Enough peers were heard to bound our origin, and none holds more of it than we do."""
        assert self.engine is not None
        status = self.engine.status(time.monotonic())
        heard = {p for p, s in status.peers.items() if s.age != float("inf")}
        if not all(group & heard for group in self._witness_groups()):
            return False
        own = self.log.head(self.replica_id)[0]
        # What each witness announced, not its claim as lowered after a short reply (a
        # timed-out pull under load must not make an empty HQ serve and reuse hq: seqs).
        return all(status.peers[p].announced.get(self.replica_id, 0) <= own for p in heard)

    def _witness_groups(self) -> list[set[str]]:
        """Who must have been heard before our origin's head is known: one peer of each group.

        HQ: every till holds HQ's events, but a store cut off from HQ may have missed
        some, so one till of every store (a store's tills sync among themselves).
        A till: its origin is held by HQ and by its store peers only, so HQ, or else
        every other till of its store (any one of them may hold its latest events).
        """
        if self.replica_id == HQ:
            return [{f"{s}/{t}" for t in tills} for s, tills in self.site.stores.items() if tills]
        store = store_of(self.replica_id) or ""
        others = {f"{store}/{t}" for t in self.site.stores.get(store, [])} - {self.replica_id}
        return [{HQ, other} for other in others]

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
        if enabled:
            self._link_on_at = time.monotonic()
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
        status["nats_server"] = self._server_status()
        if self.replica_id != HQ:
            status["uplink"] = self.uplink.as_dict()
        else:
            status["leaves"] = dict(self.leaves)
        return status

    def _server_status(self) -> dict[str, object]:
        if self.supervisor is None:
            return {"up": False, "pid": None, "reason": "not started"}
        return self.supervisor.status()

    def online(self) -> bool:
        if self.engine is None or self.replica_id == HQ:
            return self.nc is not None and self.nc.is_connected
        if not self.hq_link_enabled():
            return False  # switched off here: what HQ said before the switch is no link now
        now = time.monotonic()
        hq = self.engine.status(now).peers.get(HQ)
        # Only HQ heard since the link was last switched on counts, not a stale announce.
        return hq is not None and hq.age < min(ONLINE_WITHIN, now - self._link_on_at)

    def card_processor(self) -> CardProcessor | None:
        """The processor, while this till's link out is on (the same WAN as HQ's link:
        switched off, the store is cut off from both)."""
        if self.processor is None or not self.hq_link_enabled():
            return None
        return self.processor

    def holders(self, origin: str, seq: int) -> list[str]:
        here = [self.replica_id] if self.log.version_vector().get(origin, 0) >= seq else []
        peers = self.engine.holders(origin, seq) if self.engine is not None else []
        return sorted({*here, *peers})

    async def rotate_key(self) -> tuple[str, int]:
        """A new signing key from our next event on (`replicas.signer.rotate_signing_key`)."""
        return await rotate_signing_key(self.log, self.replica_id, self.identity.directory)

    def unsynced_to_hq(self) -> int:
        if self.engine is None or self.replica_id == HQ:
            return 0
        return self.log.head(self.replica_id)[0] - self.engine.receipts().get(HQ, 0)


class _QuietServer(uvicorn.Server):
    """uvicorn, minus its signal handling (the replica process owns SIGTERM/SIGINT),
    calling `started` once it listens: the port is bound, so the till truly serves."""

    def __init__(self, config: uvicorn.Config, started: Callable[[], None]) -> None:
        super().__init__(config)
        self._started = started

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self._started()


async def _log_nats_error(e: Exception) -> None:
    log.warning("nats: %s", e)
