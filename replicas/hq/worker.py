"""An HQ ingest worker on PostgreSQL: `tillmesh hq --db postgresql://... --shard K/N`.

A `Replica` (runtime.py) whose log is `PgLog` and whose sync covers its share of the
stores (`shard.py`): it hears every till's announcements and pushes, but plans pulls
and ingests only for its stores, and answers the pulls of its stores' tills, serving
HQ's origin too from the shared database (relay to a replacement till included).
Worker 0 is the front: it runs HQ's hub nats-server (the others connect to it, or to
another hub node with `--nats`), owns HQ's origin and serves HQ's API. The others serve
`/healthz`, `/metrics`, the catalog and reports from the database, and take HQ's writes,
which they hand to worker 0 (`forward.py`) (at `--listen`, by default HQ's API host and
port + K), under HQ's API tokens (the tokens file in HQ's data folder). Several
workers announce as `hq`; a till keeps the most each origin was announced at, so it
sees the union: what the database holds.

A worker killed and started again resumes from the database's heads: nothing is
written twice (each origin has one writer; `PgLog` refuses a head it did not read).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg

from broker.subjects import HQ, is_pull_subject, peer_from_subject, pull_parties
from conflict.reports import Window
from core.clock import HybridClock, system_wall_ms
from replicas.api.tokens import TOKENS_FILE, TokenStore
from replicas.dashboard import mount_dashboard
from replicas.dashboard.figures import conflict_counts, link_view, sales_figures
from replicas.errors import ApiUnprotected
from replicas.hq import links
from replicas.hq import reports as pg_reports
from replicas.hq.api import PgReads, create_hq_app, create_worker_app
from replicas.hq.folded import FOLDED_FILE, FoldedState
from replicas.hq.shard import Shard
from replicas.hq.store import OWNS_CACHE, PgLog
from replicas.runtime import Replica
from replicas.signer import open_signing
from replicas.site import Site, is_loopback
from replicas.sync.config import SyncConfig
from replicas.sync.engine import SyncEngine
from replicas.sync.protocol import holds
from replicas.sync.transport import SyncTransport

__all__ = ["HqWorker", "ShardTransport"]

log = logging.getLogger(__name__)
SHARED_EVERY = 1.0  # seconds between reads of the heads this worker serves, not writes
# A worker storing a frame of this many events or more is taking in a backlog (a
# catch-up's pull windows are full), and worker 0's background fold waits until a
# second has passed without one. A chain's steady flow comes as tills' pushes of a few
# events each, however many stores, so the fold keeps up with that as it comes.
BACKLOG_FRAME = 100


class ShardTransport(SyncTransport):
    """Sync over NATS for one worker: messages of other workers' stores are theirs."""

    shard: Shard

    async def _dispatch(self, msg: Msg) -> None:
        if is_pull_subject(msg.subject):
            parties = pull_parties(msg.subject)
            if parties is not None and not self.shard.answers(parties[1]):
                return  # the requester's store's worker answers it
        else:
            peer = peer_from_subject(msg.subject)
            if peer is not None and peer != HQ and not self.shard.owns(peer):
                return  # another worker's store: not ours to pull from or ingest
        await super()._dispatch(msg)


class HqWorker(Replica):
    """One ingest worker of HQ on PostgreSQL."""

    def __init__(
        self,
        site: Site,
        root: Path,
        dsn: str,
        shard: Shard | None = None,
        *,
        fresh: bool = False,
        nats_url: str | None = None,
        listen: tuple[str, int] | None = None,
        wall_ms: Callable[[], int] = system_wall_ms,
        sync_config: SyncConfig | None = None,
    ) -> None:
        super().__init__(site, HQ, root, fresh=fresh, wall_ms=wall_ms, sync_config=sync_config)
        self.dsn, self.shard, self.nats_url = dsn, shard or Shard(), nats_url
        self.hq_dir = self.data_dir  # HQ's folder: its API tokens, whichever worker reads
        self.listen = listen or (site.host_of(HQ), site.node(HQ).api + self.shard.index)
        if not self.shard.front:  # its own lock: worker 0 holds HQ's folder
            self.data_dir = self.data_dir / "workers" / f"{self.shard.index}-of-{self.shard.count}"
        self.reads = PgReads(dsn)
        # asked per event by sync's admit (twice: the sender's scope and ours), as by the
        # log, which caches its own: py-spy put 10% of a worker's CPU in it, end to end
        self._owns = functools.lru_cache(maxsize=OWNS_CACHE)(self._owns_origin)
        # worker 0 serves HQ's API: conflicts, the digest and sales read the fold's state,
        # folded beside ingest (`FoldedState.follow`), so ingest never waits for it
        folded_at = self.data_dir / FOLDED_FILE
        self.folded = FoldedState(folded_at, dsn, site.price_policy) if self.shard.front else None
        self._backlog_at = -1.0  # time.monotonic() when a backlog's frame was last stored

    # The log: PostgreSQL, this worker's share -------------------------------------------

    async def _open_log(self) -> Any:
        clock = HybridClock(self.wall_ms, max_offset_ms=self.site.max_clock_offset_ms)
        signer, verifier = open_signing(self.site, self.replica_id, self.identity, self.data_dir)
        pg = await PgLog.open(
            self.dsn, HQ, owns=self._owns, clock=clock, wall_ms=self.wall_ms,
            signer=signer, verifier=verifier, price_policy=self.site.price_policy,
        )  # fmt: skip
        if not self.shard.owns(HQ):
            await pg.refresh_shared([HQ])
            self._tasks.append(asyncio.create_task(self._refresh_shared(pg), name="shared"))
        if not self.shard.front:  # worker 0 serves the dashboard: it reads these
            publish = links.publish_forever(self.dsn, str(self.shard), self._own_links)
            self._tasks.append(asyncio.create_task(publish, name="links"))
        if self.folded is not None:  # its reads then wait for a slice at most
            pg.listeners.append(self._note_ingest)
            follow = self.folded.follow(busy=self._ingesting)
            self._tasks.append(asyncio.create_task(follow, name="fold"))
        return pg

    def _note_ingest(self, new: list[Any]) -> None:
        if len(new) >= BACKLOG_FRAME:
            self._backlog_at = time.monotonic()

    def _ingesting(self) -> bool:
        """Whether this worker stored a backlog's frame within the last second."""
        return time.monotonic() - self._backlog_at < 1.0

    def _own_links(self) -> dict[str, Any]:
        origins: dict[str, Any] = self.sync_status().get("origins") or {}  # type: ignore[assignment]
        return {o: s for o, s in origins.items() if o != HQ and self.shard.owns(o)}

    async def _links(self) -> dict[str, Any]:
        """Worker 0's sync status, the other workers' tills added (for the dashboard)."""
        shared = await self.reads.read(lambda c: links.read_shared(c, self.shard.owns))
        one_hub = not self.site.hq_nodes
        return link_view(links.merged(self.sync_status(), shared), one_hub)

    def _owns_origin(self, origin: str) -> bool:
        return holds(HQ)(origin) and self.shard.owns(origin)

    def _serves(self, origin: str) -> bool:
        return holds(HQ)(origin) and (self.shard.owns(origin) or origin == HQ)

    async def _refresh_shared(self, pg: PgLog) -> None:
        while True:
            await asyncio.sleep(SHARED_EVERY)
            with contextlib.suppress(Exception):  # the database is away: try again later
                await pg.refresh_shared([HQ])
                await pg.refresh_keys()  # HQ's rotations, taken in by worker 0

    def _observe_log(self) -> None:
        """Commits counted for `/metrics`; no `StateCache` (it reads a SQLite log: the
        figures come from PostgreSQL in `api.py` and `_app`)."""
        self.log.commit_observers.append(self.metrics.on_commit)

    async def _watch_leaves(self) -> None:
        if self.shard.front:  # the others run no nats-server of their own to ask
            await super()._watch_leaves()

    def _new_engine(self) -> SyncEngine:
        pg: PgLog = self.log  # type: ignore[assignment]
        return SyncEngine(
            HQ, self._owns, self.sync_config, vv=pg.version_vector(),
            serves=self._serves, served_vv=pg.served_vv,
        )  # fmt: skip

    def _new_transport(self, nc: Client) -> SyncTransport:
        assert self.engine is not None
        transport = ShardTransport(nc, self.log, self.engine, observer=self.metrics)
        transport.shard = self.shard
        return transport

    # The network: worker 0 runs HQ's hub server, the others connect to one -------------

    async def _start_server(self) -> None:
        if self.shard.front:
            await super()._start_server()

    def _nats_url(self) -> str:
        if self.nats_url is not None:
            return self.nats_url
        if self.server is not None:
            return self.server.client_url
        return self.site.server_config(HQ, self.identity).client_url

    # The API: worker 0 serves HQ's, over PostgreSQL; the others a part, writes forwarded

    async def _serve_when_ready(self) -> None:
        if self.shard.front:
            await super()._serve_when_ready()
        else:
            host, port = self.listen
            front = self.site.api_url(HQ)  # worker 0: HQ's writes are its
            verify = self.site.api_verify(self.identity.tls.ca_file)
            app = create_worker_app(self, self.reads, self.metrics, front, self._access(host),  # type: ignore[arg-type]
                                    verify=verify)  # fmt: skip
            await self._serve_api(app, host, port)

    @property
    def tokens(self) -> TokenStore:
        return TokenStore(self.hq_dir / TOKENS_FILE)

    def _check_api_protected(self) -> None:
        host = self.site.host_of(HQ) if self.shard.front else self.listen[0]
        if not is_loopback(host) and not self.tokens.records():
            raise ApiUnprotected(self.replica_id, host)

    def api_url(self) -> str:
        """Where this worker serves: HQ's API (worker 0), or its health and metrics."""
        if self.shard.front:
            return self.site.api_url(HQ)
        return self.site.api_url_at(*self.listen)

    def _access(self, host: str) -> Any:
        from replicas.api.auth import Access, CashierLimits

        limits = CashierLimits(self.site.cashier_discount_limit_bp, self.site.cashier_void_within_s)
        return Access(self.tokens, is_loopback(host), limits)

    async def _await_own_history(self) -> None:
        if self.shard.owns(HQ):
            await super()._await_own_history()

    def _app(self) -> Any:
        access = self._access(self.site.host_of(HQ))
        app = create_hq_app(self, self.reads, access, self.metrics, self.folded)  # type: ignore[arg-type]
        folded = self.folded
        assert folded is not None  # worker 0's

        async def figures(window: Window) -> dict[str, Any]:
            out = await self.reads.read(lambda c: sales_figures(pg_reports, c, window))
            return {**out, "conflicts": await folded.read(conflict_counts)}

        one_hub = not self.site.hq_nodes
        mount_dashboard(app, self, self.site.stores, figures, leaves_known=one_hub,
                        links=self._links)  # fmt: skip
        return app

    async def stop(self) -> None:
        await super().stop()
        self.reads.close()
        if self.folded is not None:
            self.folded.close()
