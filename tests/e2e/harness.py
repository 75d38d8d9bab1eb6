"""Run a whole site as real processes: `tillmesh hq` / `tillmesh till` subprocesses, each
with its own supervised nats-server, SQLite logs in a temp folder.

`Mesh` starts and stops replicas, sells through their HTTP APIs and records every
acknowledged sale (the oracle), injects faults with real signals, and checks
convergence against the oracle: over the APIs while running, then on disk with the
`tillmesh state --digest` and `tillmesh log verify` commands.

Every process is stopped by PID (SIGCONT, SIGTERM, wait, SIGKILL), including the
nats-server children and any nats-server orphaned by a killed till (found by its
config path, which lies inside this mesh's folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import shutil
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from broker.keyring import CA_CERT, IDENTITY_DIR
from broker.subjects import HQ
from replicas.cli.main import main as cli_main
from replicas.site import Site, init_site, load_site
from replicas.sync.protocol import holds

__all__ = [
    "TILLMESH",
    "Mesh",
    "Oracle",
    "ReplicaProc",
    "proc_state",
    "running_mesh",
    "wait_until",
]

T = TypeVar("T")
TILLMESH = [sys.executable, "-m", "replicas.cli.main"]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CONVERGE_TIMEOUT = 60.0


async def wait_until(
    check: Callable[[], Awaitable[T]], what: str, timeout: float = 30.0, every: float = 0.1
) -> T:
    """Poll `check` until it returns something truthy; AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = await check()
        except (httpx.HTTPError, OSError) as e:  # a replica restarting or frozen
            last = e
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        await asyncio.sleep(every)


def proc_state(pid: int) -> str | None:
    """psutil's status of `pid` (psutil.STATUS_STOPPED after SIGSTOP), None if gone."""
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return None


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _terminate(procs: Iterable[psutil.Process], timeout: float) -> list[int]:
    """SIGCONT + SIGTERM, wait, SIGKILL the rest, wait. Returns PIDs still alive."""
    procs = list(procs)
    for p in procs:
        _signal(p.pid, signal.SIGCONT)  # a stopped process would sit on its TERM
        _signal(p.pid, signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        _signal(p.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


# --- one replica process ------------------------------------------------------------------


class ReplicaProc:
    """One `tillmesh till` / `tillmesh hq` subprocess."""

    def __init__(self, mesh: Mesh, rid: str) -> None:
        self.mesh, self.rid = mesh, rid
        self.url = mesh.site.api_url(rid)
        self.root = mesh.machines.get(rid, mesh.root)  # its --data folder
        self.data_dir = mesh.site.data_dir(self.root, rid)
        self.out = mesh.logs / f"{rid.replace('/', '-')}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self._out_from = 0  # where this run's output starts in `out`

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.rid} was never started"
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def command(self, fresh: bool) -> list[str]:
        data = ["--data", str(self.root)] + (["--fresh"] if fresh else [])
        wrap = self.mesh.wrap.get(self.rid, [])  # e.g. faketime, for a skewed clock
        if self.rid == HQ:
            return [*wrap, *self.mesh.tillmesh, "hq", *data]
        store, till = self.rid.split("/")
        return [*wrap, *self.mesh.tillmesh, "till", *data, "--store", store, "--till", till]

    def spawn(self, fresh: bool) -> None:
        assert not self.running, f"{self.rid} already running"
        with open(self.out, "ab") as out:
            self._out_from = out.tell()
            out.write(f"--- start {' '.join(self.command(fresh))}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.command(fresh),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's ^C reaches pytest only
            )

    async def wait_serving(self, timeout: float = START_TIMEOUT) -> None:
        async def serving() -> bool:
            if not self.running:
                raise AssertionError(f"{self.rid} exited early:\n{self.tail()}")
            if f"{self.rid} serving on".encode() not in self.out.read_bytes()[self._out_from :]:
                return False
            r = await self.mesh.client(self.rid).get(f"{self.url}/healthz")
            return r.status_code == 200

        await wait_until(serving, f"{self.rid} to serve", timeout)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.out.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # --- processes ------------------------------------------------------------------

    def nats_servers(self) -> list[psutil.Process]:
        """This replica's nats-server processes: children, or orphans of a killed till."""
        marker = str(self.data_dir / "nats") + os.sep
        found = []
        for p in psutil.process_iter(["cmdline"]):
            cmd = p.info["cmdline"] or []
            if any(arg.startswith(marker) for arg in cmd):
                found.append(p)
        return found

    def tree(self) -> list[psutil.Process]:
        procs: dict[int, psutil.Process] = {p.pid: p for p in self.nats_servers()}
        if self.running:
            with contextlib.suppress(psutil.NoSuchProcess):
                main = psutil.Process(self.pid)
                procs[main.pid] = main
                procs.update({c.pid: c for c in main.children(recursive=True)})
        return list(procs.values())

    def stop(self, timeout: float = STOP_TIMEOUT) -> list[int]:
        """Stop the replica and its nats-server by PID; returns PIDs that would not die."""
        main = [] if not self.running else [psutil.Process(self.pid)]
        children = [p for p in self.tree() if not main or p.pid != main[0].pid]
        left = _terminate(main, timeout)  # a clean shutdown stops its own nats-server
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1)  # reap
        left += _terminate([p for p in children if p.is_running()], timeout)
        return left

    def lose_disk(self, keep: Path | None = None) -> None:
        """The machine's disk is lost (moved to `keep`, else deleted) and the machine's
        bundle installed again: its identity comes back, nothing else does."""
        identity = self.data_dir / IDENTITY_DIR
        saved = self.mesh.logs / f"{self.rid.replace('/', '-')}-identity"
        shutil.copytree(identity, saved, dirs_exist_ok=True)
        if keep is None:
            shutil.rmtree(self.data_dir)
        else:
            shutil.move(self.data_dir, keep)
        shutil.copytree(saved, identity)

    def kill(self, sig: int) -> None:
        _signal(self.pid, sig)

    async def freeze(self, *, tree: bool = False) -> None:
        for p in self.tree() if tree else [psutil.Process(self.pid)]:
            await signal_and_wait(p.pid, signal.SIGSTOP)

    async def thaw(self, *, tree: bool = False) -> None:
        for p in self.tree() if tree else [psutil.Process(self.pid)]:
            await signal_and_wait(p.pid, signal.SIGCONT)

    # --- API ------------------------------------------------------------------------

    async def status(self, digest: bool = True) -> dict[str, Any]:
        params = {"digest": digest, "conflicts": False}  # detection is not what these test
        r = await self.mesh.client(self.rid).get(f"{self.url}/status", params=params)
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    async def metrics(self) -> dict[str, float]:
        """`GET /metrics`, parsed by prometheus_client's own text parser: sample name with
        its labels (`name{k="v",...}`, sorted) -> value."""
        r = await self.mesh.client(self.rid).get(f"{self.url}/metrics")
        r.raise_for_status()
        assert r.headers["content-type"].startswith("text/plain"), r.headers
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(r.text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def nats_server_pid(self) -> int:
        async def known() -> int | None:
            pid = (await self.status(digest=False))["sync"].get("nats_server_pid")
            return pid if isinstance(pid, int) else None

        return await wait_until(known, f"{self.rid}'s nats-server pid", 20)


async def signal_and_wait(pid: int, sig: int, timeout: float = 5.0) -> None:
    """Send SIGSTOP/SIGCONT and wait until the kernel shows the process (not) stopped."""
    _signal(pid, sig)
    stopped = sig == signal.SIGSTOP

    async def settled() -> bool:
        state = proc_state(pid)
        return state is None or (state == psutil.STATUS_STOPPED) == stopped

    await wait_until(settled, f"pid {pid} to {'stop' if stopped else 'continue'}", timeout, 0.01)


# --- the oracle -----------------------------------------------------------------------------


@dataclass
class Oracle:
    """Every sale a till acknowledged: sale id -> (receipt, total)."""

    sales: dict[str, tuple[str, int]] = field(default_factory=dict)

    def record(self, sale_id: str, receipt: str, total: int) -> None:
        assert sale_id not in self.sales, f"{sale_id} acknowledged twice"
        self.sales[sale_id] = (receipt, total)

    def heads(self, scope: Callable[[str], bool] = lambda origin: True) -> dict[str, int]:
        """Per origin (in `scope`: what one replica holds), the highest acknowledged seq."""
        heads: dict[str, int] = {}
        for sale_id in self.sales:
            origin, seq = split_id(sale_id)
            if scope(origin):
                heads[origin] = max(heads.get(origin, 0), seq)
        return heads

    def held(self, scope: Callable[[str], bool]) -> dict[str, tuple[str, int]]:
        """The acknowledged sales a replica of `scope` holds."""
        return {sid: sale for sid, sale in self.sales.items() if scope(split_id(sid)[0])}

    @property
    def gross(self) -> int:
        return sum(total for _, total in self.sales.values())


def _same_scope(statuses: dict[str, dict[str, Any]]) -> list[list[str]]:
    """The replicas that must fold to one state: each store's tills, and HQ with them when
    the site has one store (with more, HQ's state holds every store's)."""
    groups: dict[str, list[str]] = {}
    for rid in statuses:
        groups.setdefault(rid.split("/")[0], []).append(rid)
    stores = [g for key, g in groups.items() if key != HQ]
    if len(stores) == 1 and HQ in groups:
        return [stores[0] + groups[HQ]]
    return list(groups.values())


def split_id(event_id: str) -> tuple[str, int]:
    origin, _, seq = event_id.rpartition(":")
    return origin, int(seq)


# --- the site --------------------------------------------------------------------------------


class Mesh:
    """A site in `root`, its replica processes and the oracle. Always `await close()`."""

    def __init__(
        self,
        root: Path,
        stores: dict[str, list[str]],
        *,
        tillmesh: Sequence[str] = TILLMESH,
        site_made: bool = False,
        wrap: dict[str, list[str]] | None = None,
        sockets: dict[str, Path] | None = None,
        tokens: dict[str, str] | None = None,
        machines: dict[str, Path] | None = None,
    ) -> None:
        """A site of `stores` in `root`/site, made here unless `site_made` (made already,
        e.g. by `tillmesh site init`); replicas run as `tillmesh` (this checkout's CLI
        by default, an installed console script in the packaging test), a replica named
        in `wrap` under that command (e.g. `faketime -f +1d`), one named in `machines`
        from that data folder (a machine's own, as `tillmesh site install` wrote it)."""
        self.wrap = wrap or {}
        self.machines = dict(machines or {})
        self.root = root / "site"
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.tillmesh = list(tillmesh)
        if not site_made:
            init_site(self.root, stores)
        self.site: Site
        self.site = load_site(self.root)
        self.procs = {rid: ReplicaProc(self, rid) for rid in self.site.replicas}
        self.oracle = Oracle()
        ca = self.root / CA_CERT
        # the site's APIs over https (`Site.api_tls`) are checked against its CA
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca)) if ca.exists() else True
        )
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), verify=self.verify)
        # Replicas on emulated machines are reached through a Unix socket each, with an
        # API token each (a replica on a network address refuses to run without one).
        self.sockets: dict[str, Path] = dict(sockets or {})
        self.tokens: dict[str, str] = dict(tokens or {})
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._sale_no = 0
        self.quarantine_allowed = False  # hostile tests: forged input may be quarantined

    def client(self, rid: str) -> httpx.AsyncClient:
        """The HTTP client that reaches `rid` (its socket, its token), else the shared one."""
        if rid not in self.sockets and rid not in self.tokens:
            return self.http
        if rid not in self._clients:
            uds = str(self.sockets[rid]) if rid in self.sockets else None
            headers = {"Authorization": f"Bearer {self.tokens[rid]}"} if rid in self.tokens else {}
            self._clients[rid] = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=uds, verify=self.verify),
                headers=headers,
                timeout=httpx.Timeout(10.0, connect=2.0),
            )
        return self._clients[rid]

    @property
    def tills(self) -> list[str]:
        return [rid for rid in self.site.replicas if rid != HQ]

    def __getitem__(self, rid: str) -> ReplicaProc:
        return self.procs[rid]

    async def start(self, *rids: str, fresh: bool = True) -> None:
        rids = rids or tuple(self.site.replicas)
        for rid in rids:
            self.procs[rid].spawn(fresh)
        await asyncio.gather(*(self.procs[rid].wait_serving() for rid in rids))

    async def close(self) -> list[int]:
        """Stop every replica; returns PIDs that survived (should be none)."""
        await self.http.aclose()
        for client in self._clients.values():
            await client.aclose()
        lefts = await asyncio.gather(*(asyncio.to_thread(p.stop) for p in self.procs.values()))
        return [pid for left in lefts for pid in left]

    def running(self) -> list[ReplicaProc]:
        return [p for p in self.procs.values() if p.running]

    # --- selling ------------------------------------------------------------------

    async def sell(self, rid: str, n: int = 1) -> list[str]:
        """`n` cash sales on `rid`, one at a time; each recorded once acknowledged."""
        ids = []
        for _ in range(n):
            self._sale_no += 1
            k = self._sale_no
            price = 100 + k % 97
            body = {
                "lines": [{"sku": f"SKU-{k % 7}", "qty": 1 + k % 3, "unit_price": price}],
                "payments": [{"method": "cash", "amount": (1 + k % 3) * price}],
            }
            r = await self.client(rid).post(f"{self.procs[rid].url}/sales", json=body)
            assert r.status_code == 201, f"sale on {rid}: {r.status_code} {r.text}"
            out = r.json()
            self.oracle.record(out["sale_id"], out["receipt"], out["total"])
            ids.append(out["sale_id"])
        return ids

    async def sell_card(self, rid: str, amount: int, auth: str = "deferred") -> str:
        """One card sale on `rid` (a token and last 4, never a card number), recorded."""
        body = {
            "lines": [{"sku": "CARD-ITEM", "qty": 1, "unit_price": amount}],
            "payments": [{"method": "card", "amount": amount, "card_token": "tok_test_0001",
                          "card_last4": "4242", "auth": auth}],
        }  # fmt: skip
        r = await self.client(rid).post(f"{self.procs[rid].url}/sales", json=body)
        assert r.status_code == 201, f"card sale on {rid}: {r.status_code} {r.text}"
        out = r.json()
        self.oracle.record(out["sale_id"], out["receipt"], out["total"])
        return str(out["sale_id"])

    async def sell_everywhere(self, rids: Iterable[str], rounds: int, per_round: int = 2) -> None:
        """Rounds of concurrent sales on every given replica."""
        rids = list(rids)
        for _ in range(rounds):
            await asyncio.gather(*(self.sell(rid, per_round) for rid in rids))

    # --- convergence ---------------------------------------------------------------

    async def statuses(self) -> dict[str, dict[str, Any]]:
        procs = self.running()
        results = await asyncio.gather(*(p.status() for p in procs))
        return {p.rid: s for p, s in zip(procs, results, strict=True)}

    def _divergence(self, statuses: dict[str, dict[str, Any]]) -> str:
        """'' if every running replica holds exactly the acknowledged sales of its scope
        (a till: its store's; HQ: all), and the replicas of each store one state."""
        for rid, s in statuses.items():
            scope = holds(rid)
            heads = self.oracle.heads(scope)
            held = self.oracle.held(scope)
            sales, gross = len(held), sum(total for _, total in held.values())
            vv = s["version_vector"]
            behind = {o: (vv.get(o, 0), h) for o, h in heads.items() if vv.get(o, 0) < h}
            if behind:
                return f"{rid} behind (have, acked): {behind}"
            if (s["sales"]["sales"], s["sales"]["gross"]) != (sales, gross):
                return f"{rid} sales {s['sales']} != acked {sales} / gross {gross}"
            if s["pending"] or (s["quarantined"] and not self.quarantine_allowed):
                return f"{rid} holds {s['pending']} pending, {s['quarantined']} quarantined"
            if rid != HQ and s["unsynced_to_hq"]:
                return f"{rid}: {s['unsynced_to_hq']} sales not yet confirmed by HQ"
        vvs = {rid: s["version_vector"] for rid, s in statuses.items()}
        for a, b in itertools.combinations(sorted(vvs), 2):
            # Over the origins both hold (HQ's events at every till, a store's at HQ): any
            # event at all, not only the acknowledged sales (a catalog write, say).
            both = [o for o in {*vvs[a], *vvs[b]} if holds(a)(o) and holds(b)(o)]
            if any(vvs[a].get(o, 0) != vvs[b].get(o, 0) for o in both):
                return f"version vectors differ: {a} {vvs[a]} / {b} {vvs[b]}"
        for group in _same_scope(statuses):
            digests = {rid: statuses[rid]["digest"] for rid in group}
            if len(set(digests.values())) > 1:
                return f"digests differ: {digests}"
        return ""

    async def wait_converged(self, timeout: float = CONVERGE_TIMEOUT) -> dict[str, Any]:
        """Wait until every running replica holds every acknowledged sale once, the same
        version vector and state digest, and no till waits on HQ's receipt."""
        last = ""

        async def converged() -> dict[str, Any] | None:
            nonlocal last
            statuses = await self.statuses()
            last = self._divergence(statuses)
            return None if last else statuses

        try:
            return await wait_until(converged, "convergence", timeout, 0.25)
        except AssertionError as e:
            raise AssertionError(f"{e}\ndivergence: {last}\n{self._tails()}") from None

    def _tails(self) -> str:
        return "\n".join(f"--- {p.rid}\n{p.tail(15)}" for p in self.procs.values())

    async def check_on_disk(self, statuses: dict[str, dict[str, Any]]) -> None:
        """`tillmesh state --digest` equal among the replicas of a scope (and to the
        API's), `log verify` OK, and every DB holds exactly the acknowledged sales of its
        scope, each once."""
        digests = {}
        for rid in statuses:
            db = str(self.procs[rid].data_dir / "log.db")
            digests[rid] = (await run_cli("state", db, "--digest")).strip()
            assert digests[rid] == statuses[rid]["digest"], f"{rid}: CLI digest {digests[rid]!r}"
            report = json.loads(await run_cli("log", "verify", db, "--json"))
            assert report["ok"], f"{rid}: log verify: {report['findings']}"
            self._check_sales(rid, Path(db))
        for group in _same_scope(statuses):
            same = {rid: digests[rid] for rid in group}
            assert len(set(same.values())) == 1, f"on-disk digests differ: {same}"

    def _check_sales(self, rid: str, db: Path) -> None:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            held = conn.execute(
                "SELECT origin, seq FROM events WHERE type = 'sale.completed'"
            ).fetchall()
            rows = conn.execute("SELECT id, receipt, total FROM st_sales").fetchall()
        finally:
            conn.close()
        acked = self.oracle.held(holds(rid))
        got = [f"{o}:{s}" for o, s in held]
        assert sorted(got) == sorted(acked), f"{rid}: sale events != acknowledged sales"
        assert len(rows) == len(acked), f"{rid}: {len(rows)} folded sales, {len(acked)} acked"
        assert {r[0]: (r[1], r[2]) for r in rows} == acked, f"{rid}: folded sales"

    async def converge_and_check(self, timeout: float = CONVERGE_TIMEOUT) -> None:
        statuses = await self.wait_converged(timeout)
        await self.check_on_disk(statuses)


async def run_cli(*args: str) -> str:
    """The `tillmesh` command line, run in-process (a subprocess per call costs seconds of
    imports on a small box); returns stdout, fails on an exit code other than 0."""

    def run() -> tuple[int, str]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = cli_main(list(args))
        return code, out.getvalue()

    code, out = await asyncio.to_thread(run)
    assert code == 0, f"tillmesh {' '.join(args)} exited {code}:\n{out}"
    return out


@contextlib.asynccontextmanager
async def running_mesh(
    root: Path, stores: dict[str, list[str]], **mesh_options: Any
) -> AsyncIterator[Mesh]:
    """A site of real processes, all started fresh and serving; at exit every one of
    them (nats-servers included) is stopped, and a survivor fails the test."""
    m = Mesh(root, stores, **mesh_options)
    try:
        await m.start()
        yield m
    finally:
        left = await m.close()
        pids = [p.pid for proc in m.procs.values() for p in proc.tree()]
        assert not left and not [p for p in pids if psutil.pid_exists(p)], (
            f"processes left running: {left} {pids}"
        )
