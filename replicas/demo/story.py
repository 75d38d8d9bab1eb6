"""`tillmesh demo`: a whole site as real processes, a day of trading, real faults, proof.

HQ and every till run as their own process (`fleet`). The workload
(`workload`) sells through the tills' HTTP API while the phases break things for
real: the HQ process tree is SIGKILLed (the back-office PC fails), a till's nats-server
is SIGSTOPped (its network freezes: it sells alone), a till is SIGKILLed and restarted.
Afterwards every replica must converge and match the model of what the API
acknowledged (`checks.verify`).

Every process started here is stopped on the way out (TERM, wait, KILL, including
the nats-servers), on success, failure and Ctrl-C alike, unless `keep` is set.

`Demo` is the plain demo, every replica on loopback. The same site on a network of
emulated machines, with its own story of faults, is `lan.story.LanDemo` (`demo --lan`):
it overrides how the site is set up and shut down (`_setup`, `_start_site`,
`shutdown`), the faults (`_faults`) and how a replica's link to HQ is seen
(`_poll_link`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx

from broker.keyring import CA_CERT
from broker.subjects import HQ
from replicas.demo.access import ApiAccess
from replicas.demo.acquirer import DemoAcquirer
from replicas.demo.checks import Check, card_money, count_conflicts, processor_check, verify
from replicas.demo.fleet import MARKER, DemoError, Fleet, PortTaken
from replicas.demo.metrics import ReplicaMetricsSummary, scrape_all
from replicas.demo.workload import TillDriver, Workload
from replicas.hq.cluster import LocalPostgres
from replicas.payments.service import KEY_FILE
from replicas.site import init_site, save_site
from replicas.sync.protocol import holds

# MARKER and DemoError are the demo's as much as the fleet's: `demo.console` takes them here.
__all__ = ["MARKER", "CatchUp", "Demo", "DemoError"]


@dataclass
class CatchUp:
    """How long the replicas in `replicas` took to hold every event acked before a heal."""

    label: str
    started: float
    target: dict[str, int]  # origin -> acked head at the heal
    replicas: list[str]
    backlog: int  # events acknowledged while the fault lasted
    took: float | None = None
    startup: float | None = None  # of `took`, spent starting a restarted process


# Share of `duration` (seconds of selling) spent in each phase.
SHARES = {
    "trading": 0.1, "store_cut": 0.15, "hq_down": 0.15, "split": 0.2, "crash": 0.2, "calm": 0.2,
}  # fmt: skip


@dataclass
class Demo:
    root: Path
    seed: int = 1
    duration: float = 36.0
    stores: int = 2
    tills: int = 3
    keep: bool = False
    catalog_size: int = 240
    shares: ClassVar[dict[str, float]] = SHARES
    rate: float = 4.0  # baskets per second per till
    converge_timeout: float = 60.0
    on_phase: Callable[[str, str], None] = lambda title, detail: None
    phase: tuple[str, str] = ("", "")
    ticker: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=200))
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    leaf: dict[str, int | None] = field(default_factory=dict)  # leaf links per nats-server
    catchups: list[CatchUp] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    conflicts: dict[str, Counter[str]] = field(default_factory=dict)
    converge_took: float | None = None
    elapsed: float = 0.0
    metrics: dict[str, ReplicaMetricsSummary] = field(default_factory=dict)  # GET /metrics
    # HQ's store: None for its SQLite log; "postgresql" for a throwaway local PostgreSQL
    # in the data folder (Debian's postgresql-15); or a postgresql:// DSN of an empty one.
    hq_db: str | None = None
    # The site's card acquirer, a process beside the fleet (the LAN demo has none: its
    # tills take cards offline under the floor limits, and nothing is forwarded).
    with_acquirer: ClassVar[bool] = True
    # store -> (payments, amount, phase) at the peak of its outstanding offline cards
    exposure_peak: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    card_split: dict[str, int] = field(default_factory=dict)  # HQ's card money by settlement

    def __post_init__(self) -> None:
        self.t0 = time.monotonic()
        self._polled_at: dict[str, float] = {}
        self.postgres: LocalPostgres | None = None

    @property
    def hq_dsn(self) -> str | None:
        if self.hq_db != "postgresql":
            return self.hq_db
        assert self.postgres is not None, "the site's PostgreSQL is not started"
        return self.postgres.dsn

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def note(self, text: str) -> None:
        self.ticker.appendleft((time.monotonic() - self.t0, text))

    def _phase(self, title: str, detail: str) -> None:
        self.phase = (title, detail)
        self.note(f"== {title}")
        self.on_phase(title, detail)

    async def run(self) -> bool:
        """Start, trade, break, heal, verify. True if every check passed. `root` must be
        empty or absent (see `demo.console.prepare_data`)."""
        interrupted = False
        try:
            await self._setup()
            await self._run()
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True  # Ctrl-C stops everything, --keep or not
            raise
        finally:
            self.elapsed = time.monotonic() - self.t0
            if hasattr(self, "api"):
                await self.api.aclose()
            if interrupted or not self.keep:
                await self.shutdown()
        return self.ok

    async def _setup(self) -> None:
        self._init_site()

    async def shutdown(self) -> None:
        """Stop every process the demo started (what `keep` leaves running, later)."""
        if hasattr(self, "fleet"):
            await self.fleet.stop_all()
        if hasattr(self, "acquirer"):
            self.acquirer.stop()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)

    def _starting(self) -> str:
        tills = len(self.site.replicas) - 1
        each = "each with its own nats-server and SQLite log"
        if self.hq_db is not None:
            return f"HQ on PostgreSQL and {tills} tills as separate processes, the tills {each}"
        return f"HQ and {tills} tills as separate processes, {each}"

    async def _run(self) -> None:
        self._phase("Starting", self._starting())
        await self._start_site()
        poller = asyncio.create_task(self._poll_forever())
        tills = [self._driver(r) for r in self.site.replicas if r != HQ]
        self.workload = Workload(self.api, tills, self.seed, self.note, self.rate)
        try:
            await self._trade(self.workload)
            await self._converge()
            self.metrics = await scrape_all(self.api, self.site.replicas)
        finally:
            poller.cancel()
        model, dsn = self.workload.model, self.hq_dsn
        cards = model if self.with_acquirer else None
        self.checks = await asyncio.to_thread(verify, self.root, self.site, model, dsn, cards)
        if self.with_acquirer:
            ledger = self.acquirer.data / "acquirer.db"
            self.checks.append(await asyncio.to_thread(processor_check, ledger, model))
        hq_dir = self.site.data_dir(self.root, HQ)
        self.card_split = await asyncio.to_thread(card_money, hq_dir, dsn)
        self.conflicts = await asyncio.to_thread(count_conflicts, self.root, self.site, dsn)

    def _layout(self) -> dict[str, list[str]]:
        """Stores s1..sN, each with tills t1..tM."""
        return {
            f"s{i}": [f"t{j}" for j in range(1, self.tills + 1)] for i in range(1, self.stores + 1)
        }

    def _init_site(self) -> None:
        self.site = init_site(self.root, self._layout())
        self.api = ApiAccess(self.site, ca_file=self.root / CA_CERT)
        if self.hq_db == "postgresql":  # in the site's folder: wiped with it
            if self.postgres is not None:
                self.postgres.stop()
            self.postgres = LocalPostgres(self.root / "postgres")
            self.postgres.start()
        hq_args = ["--db", self.hq_dsn] if self.hq_dsn is not None else []
        self.fleet = Fleet(self.root, self.site, self.api, hq_args=hq_args)
        self.fleet.save_pids()  # the marker: this folder is the demo's to wipe next time

    async def _start_site(self, attempts: int = 3) -> None:
        """Start every replica; on a port race (ports are chosen free, then bound later
        by the replica, and other programs' connections may grab one in between) start
        over with a freshly chosen set, since every replica's config names its peers."""
        for attempt in range(1, attempts + 1):
            try:
                await self._start_all()
                return
            except PortTaken as e:
                if attempt == attempts:
                    raise
                self.note(f"{e}; starting over on new ports")
                await self.fleet.stop_all()
                await self.api.aclose()
                if self.postgres is not None:
                    self.postgres.stop()
                shutil.rmtree(self.root)  # this run's own folder, made a moment ago
                self._init_site()

    async def _use_acquirer(self) -> None:
        """Start the acquirer (once) and name it in site.json, before any till starts."""
        if not self.with_acquirer:
            return
        if not hasattr(self, "acquirer"):
            self.acquirer = DemoAcquirer(self.root / "acquirer")
            self.acquirer_url = await self.acquirer.start()
        self.site = self.site.model_copy(
            update={
                "acquirer_url": self.acquirer_url,
                "card_forward_every_s": 1.0,
                "acquirer_key_file": f"acquirer/{KEY_FILE}",
            }
        )
        save_site(self.root, self.site)
        self.fleet.site = self.site

    async def _start_all(self) -> None:
        await self._use_acquirer()
        tasks = [asyncio.create_task(self.fleet.start(r, fresh=True)) for r in self.site.replicas]
        try:
            await asyncio.gather(*tasks)
        finally:  # one failed: stop waiting for the others (stop_all ends their processes)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _driver(self, rid: str) -> TillDriver:
        d = TillDriver(rid, random.Random(f"{self.seed}/{rid}"), {})
        d.resume()
        return d

    async def _trade(self, w: Workload) -> None:
        t = {k: v * max(self.duration, 5.0) for k, v in self.shares.items()}
        await self._stock_the_stores(w)
        stop = asyncio.Event()
        selling = asyncio.create_task(w.run_tills(stop))
        try:
            self._phase(
                "Trading",
                "baskets of 1-10 lines, cash and card, refunds, voids, deliveries, at every till",
            )
            await asyncio.sleep(t["trading"])
            await self._faults(w, t)
            self._phase("Trading", "all faults healed; every till sells")
            await asyncio.sleep(t["calm"])
        finally:
            stop.set()
            for d in w.tills:
                d.resume()  # let paused cashiers see `stop` and leave
            await selling

    async def _faults(self, w: Workload, t: dict[str, float]) -> None:
        """The story's faults, each healed before the next; `t`: seconds per phase."""
        await self._store_cut(t["store_cut"])
        await self._hq_down(w, t["hq_down"])
        await self._split(t["split"])
        await self._crash(w, t["crash"])

    async def _stock_the_stores(self, w: Workload) -> None:
        """HQ's catalog at every till, then a delivery of every SKU to each store."""
        self._phase(
            "Catalog",
            f"HQ publishes {self.catalog_size} products and the card floor limits; they "
            "replicate to every till; each store takes a delivery of every SKU",
        )
        t0 = time.monotonic()
        await w.publish_catalog(self.catalog_size)
        await w.set_card_limits()
        self.note(f"HQ published {self.catalog_size} products in {time.monotonic() - t0:.1f} s")
        tills = [r for r in self.site.replicas if r != HQ]
        await self._await(self._track("catalog at every till", tills), 30)
        t0 = time.monotonic()
        await w.initial_deliveries()
        self.note(f"{w.model.counts['deliveries']} deliveries in {time.monotonic() - t0:.1f} s")

    async def _store_cut(self, seconds: float) -> None:
        """Store 1 alone loses HQ: every s1 till switches its leaf link off (nats-server
        config reload, `PUT /link/hq`); store 2 stays connected and keeps reaching HQ."""
        tills = [f"s1/{t}" for t in self.site.stores["s1"]]
        await self._set_hq_link(tills, enabled=False)
        self._phase(
            "Store 1 cut off",
            "store 1's leaf links to HQ switched off (config reload of its tills' "
            f"nats-servers): store 1 sells on among its tills{self._others_still_reach_hq()}",
        )
        mark = dict(self.workload.model.heads)
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        await self._set_hq_link(tills, enabled=True)
        self.note("store 1: leaf links to HQ back on")
        self._track("store 1 back on HQ", [HQ], heal)

    def _others_still_reach_hq(self) -> str:
        others = [s for s in self.site.stores if s != "s1"]
        if not others:
            return ""
        return f", {', '.join(others)} still {'reaches' if len(others) == 1 else 'reach'} HQ"

    def _every_store(self) -> str:
        n = len(self.site.stores)
        return "the store's tills" if n == 1 else f"all {n} stores"

    async def _set_hq_link(self, tills: list[str], *, enabled: bool) -> None:
        for rid in tills:
            url, body = self.api.url(rid, "/link/hq"), {"enabled": enabled}
            (await self.api.client(rid).put(url, json=body, timeout=5.0)).raise_for_status()

    async def _hq_down(self, w: Workload, seconds: float) -> None:
        pids = self.fleet.kill(HQ)
        self._phase(
            "HQ down",
            f"the back-office PC fails: HQ and its nats-server SIGKILLed "
            f"(pids {' '.join(map(str, pids))}); {self._every_store()} lose their leaf link "
            "to HQ and keep selling, their sales queue as 'not at HQ'",
        )
        mark = dict(w.model.heads)
        await asyncio.sleep(seconds)
        self._phase("HQ back", "HQ restarts on its own log and pulls what the stores sold")
        heal = self._heal_point(mark)
        await self.fleet.start(HQ, fresh=False)
        self._track("HQ back: HQ holds every sale", [HQ], heal).startup = time.monotonic() - heal[0]
        skus = await w.change_prices(12)
        self.note(f"HQ reprices {len(skus)} SKUs mid-run: {', '.join(skus[:4])}, ...")
        tills = [r for r in self.site.replicas if r != HQ]
        await self._await(self._track("price change at every till", tills), 30)
        await self._store_override(w)

    async def _store_override(self, w: Workload) -> None:
        """Store 1's manager marks one SKU down at a till: store 1's price only."""
        rid = f"s1/{self.site.stores['s1'][0]}"
        done = await w.store_override(rid)
        if done is None:
            self.note(f"{rid}: the store price override was refused")
            return
        sku, price = done
        chain = w.model.chain_prices[sku]
        self._phase("Store price", f"{rid}: store 1 marks {sku} down to {price / 100:.2f} "
                    f"(chain price {chain / 100:.2f}): store 1's tills only")  # fmt: skip
        tills = [r for r in self.site.replicas if r.startswith("s1/")]
        await self._await(self._track("store 1's price at its tills", [*tills, HQ]), 30)

    async def _split(self, seconds: float) -> None:
        if self.tills < 2:
            return
        victim = "s1/t1"
        pid = await self.fleet.freeze_network(victim)
        self._phase(
            "Store 1 split",
            f"{victim}'s nats-server SIGSTOPped (pid {pid}): {victim} "
            "sells alone, cut from its store and HQ; the other tills sell on "
            "together",
        )
        mark = dict(self.workload.model.heads)
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        self.fleet.thaw_network(victim)
        self.note(f"{victim}: SIGCONT, network back")
        self._track("store 1 split healed", self._scope_of("s1"), heal)

    async def _crash(self, w: Workload, seconds: float) -> None:
        store = f"s{self.stores}"
        victim = f"{store}/t{min(2, self.tills)}"
        driver = next(d for d in w.tills if d.rid == victim)
        await driver.pause()  # between two requests: every answer given is in its log
        pids = self.fleet.kill(victim)
        self._phase(
            "Till crash",
            f"{victim} and its nats-server SIGKILLed (pids "
            f"{' '.join(map(str, pids))}): power cut mid-shift; the others sell "
            "on",
        )
        mark = dict(w.model.heads)
        await asyncio.sleep(seconds)
        heal = self._heal_point(mark)
        await self.fleet.start(victim, fresh=False)
        driver.resume()
        self.note(f"{victim}: restarted on its own log")
        c = self._track(f"{victim} restarted and caught up", self._scope_of(store), heal)
        c.startup = time.monotonic() - heal[0]

    def _scope_of(self, store: str) -> list[str]:
        return [HQ, *(f"{store}/{t}" for t in self.site.stores[store])]

    def _heal_point(self, mark: dict[str, int]) -> tuple[float, dict[str, int], int]:
        """(when, acked heads, events acked since `mark`) at the moment a fault heals."""
        heads = dict(self.workload.model.heads)
        return time.monotonic(), heads, sum(s - mark.get(o, 0) for o, s in heads.items())

    def _track(
        self, label: str, replicas: list[str], heal: tuple[float, dict[str, int], int] | None = None
    ) -> CatchUp:
        """Time until `replicas` hold every event acked at the heal (default: now)."""
        started, heads, backlog = heal or (time.monotonic(), dict(self.workload.model.heads), 0)
        c = CatchUp(label, started, heads, replicas, backlog)
        self.catchups.append(c)
        return c

    async def _await(self, c: CatchUp, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while c.took is None:
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for: {c.label}")
            await asyncio.sleep(0.05)

    async def _converge(self) -> None:
        self._phase(
            "Converging",
            "selling stopped; waiting until every replica holds every "
            "acknowledged event and the digests agree",
        )
        final = self._track("final convergence", list(self.site.replicas))
        try:
            await self._await(final, self.converge_timeout)
            await self._await_cards_settled(final.started)
            while not self._digests_agree():
                if time.monotonic() - final.started > self.converge_timeout:
                    raise DemoError("replicas hold every event but their digests differ")
                await asyncio.sleep(0.1)
        except DemoError as e:
            self.checks = [Check("site", "convergence", False, str(e))]
            raise
        self.converge_took = time.monotonic() - final.started
        for c in self.catchups:
            if c.took is None:  # never seen separately: bounded by the final convergence
                c.took = time.monotonic() - c.started

    async def _await_cards_settled(self, started: float) -> None:
        """Every offline card payment captured, declined or expired, as HQ sees it (the
        tills forward them once they reach the acquirer; their outcomes replicate)."""
        if not self.with_acquirer:
            return
        while True:
            exposure = self.status.get(HQ, {}).get("card_exposure") or {}
            if self._polled_at.get(HQ, 0.0) > started and not exposure.get("payments"):
                return
            if time.monotonic() - started > self.converge_timeout:
                raise DemoError(f"offline card payments still outstanding: {exposure}")
            await asyncio.sleep(0.1)

    def _digests_agree(self) -> bool:
        for store, tills in self.site.stores.items():
            digests = {self.status.get(f"{store}/{t}", {}).get("digest") for t in tills}
            if len(digests) != 1 or None in digests:
                return False
        return True

    # --- status polling ----------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        async with httpx.AsyncClient(timeout=0.5) as monitors:  # nats-servers' /leafz
            for n in itertools.count():
                # Hashing the whole state costs a replica ~30 ms: only every 4th poll.
                digest = n % 4 == 0 or self.phase[0] == "Converging"
                polls = (self._poll(monitors, r, digest) for r in self.site.replicas)
                await asyncio.gather(*polls)
                self._resolve_catchups()
                await asyncio.sleep(0.4)

    async def _poll(self, monitors: httpx.AsyncClient, rid: str, digest: bool) -> None:
        if self.fleet.procs[rid].state not in ("running", "net frozen"):
            return
        asked = time.monotonic()
        with contextlib.suppress(httpx.HTTPError, ValueError):
            # conflicts=false: detection is counted once at the end, not on every poll
            params = {"digest": str(digest).lower(), "conflicts": "false"}
            url = self.api.url(rid, "/status")
            r = await self.api.client(rid).get(url, params=params, timeout=1.5)
            if r.is_success:
                old_digest = self.status.get(rid, {}).get("digest")
                self.status[rid], self._polled_at[rid] = r.json(), asked
                if not digest:
                    self.status[rid]["digest"] = old_digest
                self._note_exposure(rid)
        await self._poll_link(monitors, rid)
        self._set_online(rid)

    def _note_exposure(self, rid: str) -> None:
        """The peak of each store's offline card exposure (any of its tills sees it all)."""
        x = self.status[rid].get("card_exposure") or {}
        store = rid.split("/")[0]
        if rid != HQ and x.get("amount", 0) > self.exposure_peak.get(store, (0, 0, ""))[1]:
            self.exposure_peak[store] = (x["payments"], x["amount"], self.phase[0])

    async def _poll_link(self, monitors: httpx.AsyncClient, rid: str) -> None:
        """`leaf`: the leaf links the replica's nats-server itself reports."""
        monitor = f"http://{self.site.host_of(rid)}:{self.site.ports[rid].monitor}/leafz"
        try:
            self.leaf[rid] = int((await monitors.get(monitor)).json()["leafnodes"])
        except (httpx.HTTPError, ValueError, KeyError):
            self.leaf[rid] = None  # a frozen nats-server does not answer

    def _set_online(self, rid: str) -> None:
        """A till's card terminal authorises online only while the store's link to HQ
        is up: the till's own `online` (off at once when its HQ link is switched off, but
        after HQ's last word it stays on up to 15 s if HQ dies) and the leaf link both."""
        workload: Workload | None = getattr(self, "workload", None)
        for d in workload.tills if workload and rid in self.status else []:
            if d.rid == rid:
                d.online = bool(self.leaf.get(rid)) and bool(self.status[rid].get("online"))

    def _resolve_catchups(self) -> None:
        for c in self.catchups:
            if c.took is None and all(self._holds(r, c) for r in c.replicas):
                # The last of the proving polls: an upper bound, within one poll period.
                c.took = max(self._polled_at[r] for r in c.replicas) - c.started

    def _holds(self, rid: str, c: CatchUp) -> bool:
        if self._polled_at.get(rid, 0.0) < c.started:
            return False  # an answer from before the heal proves nothing
        vv = self.status[rid].get("version_vector", {})
        scope = holds(rid)
        return all(vv.get(o, 0) >= s for o, s in c.target.items() if scope(o))
