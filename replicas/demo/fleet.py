"""The demo's replica processes and the real faults it injects.

HQ and every till run as their own `tillmesh hq` / `tillmesh till` process (each with
its own nats-server and SQLite log under the data folder), started in a new session
so the demo can signal a replica together with its nats-server: SIGKILL of a whole
process tree (a power cut), SIGSTOP of a nats-server (the network freezes while the
till sells on), and the stop of them all on the way out (TERM, wait, KILL).

A replica may run under a command prefix (`wrap`: `ip netns exec <machine>` on the
emulated network of `demo --lan`), and its API is reached through the demo's `ApiAccess`.

The pids of the running replicas go to the folder's marker file (`MARKER`), the one
thing that allows a later demo to wipe the folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]

from broker.subjects import HQ
from replicas.demo.access import ApiAccess
from replicas.site import Site

__all__ = ["MARKER", "DemoError", "Fleet", "PortTaken", "Proc", "tillmesh_command"]

MARKER = "demo.json"  # written by the demo only: the one thing that allows wiping a folder
START_TIMEOUT = 60.0


class DemoError(Exception):
    """The demo could not run (or could not prove convergence): a clear message."""


class PortTaken(DemoError):
    """Another program bound a port between `init_site` choosing it and a replica using it."""


def tillmesh_command() -> list[str]:
    """How to run `tillmesh` here: this environment's console script, else the module."""
    script = Path(sys.executable).parent / "tillmesh"
    return [str(script)] if script.exists() else [sys.executable, "-m", "replicas.cli.main"]


# --- processes -------------------------------------------------------------------------------


@dataclass
class Proc:
    rid: str
    popen: subprocess.Popen[bytes] | None = None
    state: str = "down"  # starting, running, net frozen, killed, stopped
    nats: psutil.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Fleet:
    """The replica processes of one site, and the real faults the demo injects."""

    def __init__(
        self,
        root: Path,
        site: Site,
        api: ApiAccess,
        wrap: Mapping[str, Sequence[str]] | None = None,
        hq_args: Sequence[str] = (),
    ) -> None:
        """`wrap`: replica id -> what its command line runs under (its machine);
        `hq_args`: more of HQ's options (`--db postgresql://...`)."""
        self.root, self.site, self.api = root, site, api
        self.hq_args = list(hq_args)
        self.wrap = {rid: list(prefix) for rid, prefix in (wrap or {}).items()}
        self.procs = {rid: Proc(rid) for rid in site.replicas}

    def _argv(self, rid: str, fresh: bool) -> list[str]:
        data = ["--data", str(self.root.resolve())] + (["--fresh"] if fresh else [])
        tillmesh = [*self.wrap.get(rid, []), *tillmesh_command()]
        if rid == HQ:
            return [*tillmesh, "hq", *data, *self.hq_args]
        store, till = rid.split("/")
        return [*tillmesh, "till", *data, "--store", store, "--till", till]

    async def start(self, rid: str, *, fresh: bool) -> None:
        proc = self.procs[rid]
        folder = self.site.data_dir(self.root, rid)
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "process.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            # A new session: Ctrl-C in the terminal reaches the demo only, which then
            # stops every replica in order instead of all dying at once.
            proc.popen = subprocess.Popen(
                self._argv(rid, fresh),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        proc.state = "starting"
        self.save_pids()
        await self._await_healthy(proc, log_path, offset)
        proc.state = "running"
        proc.nats = self._nats_child(proc)

    async def _await_healthy(self, proc: Proc, log: Path, offset: int) -> None:
        url, client = self.api.url(proc.rid, "/healthz"), self.api.client(proc.rid)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            _check_start_log(proc, log, offset)
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url, timeout=1.0)).is_success:
                    return
            await asyncio.sleep(0.1)
        raise DemoError(f"{proc.rid} did not serve within {START_TIMEOUT:.0f} s (see {log})")

    def _nats_child(self, proc: Proc) -> psutil.Process | None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                if child.name().startswith("nats-server"):
                    return child
        return None

    def save_pids(self) -> None:
        pids = {rid: p.pid for rid, p in self.procs.items() if p.alive()}
        (self.root / MARKER).write_text(
            json.dumps({"created_by": "tillmesh demo", "pids": pids}, indent=2) + "\n"
        )

    # --- faults ----------------------------------------------------------------------------

    def kill(self, rid: str) -> list[int]:
        """SIGKILL the replica and its nats-server at once: a power cut, no shutdown code."""
        proc = self.procs[rid]
        victims = self._tree(proc)
        for p in victims:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)  # psutil checks the pid is still that process
        _wait_gone(victims, 5)
        if proc.popen is not None:
            proc.popen.wait()
        proc.state, proc.nats = "killed", None
        return [p.pid for p in victims]

    def _tree(self, proc: Proc) -> list[psutil.Process]:
        if not proc.alive():
            return [proc.nats] if proc.nats is not None else []
        try:
            main = psutil.Process(proc.pid)
            return [main, *main.children(recursive=True)]
        except psutil.Error:
            return []

    async def freeze_network(self, rid: str) -> int:
        """SIGSTOP the replica's nats-server: the till process keeps running (and
        selling) while its cluster routes, leaf link and client connection all stall."""
        proc = self.procs[rid]
        proc.nats = proc.nats or self._nats_child(proc)
        if proc.nats is None:
            raise DemoError(f"{rid}: no nats-server child found to freeze")
        proc.nats.suspend()
        for _ in range(100):  # signals are asynchronous: act only on a frozen server
            if proc.nats.status() == psutil.STATUS_STOPPED:
                break
            await asyncio.sleep(0.02)
        proc.state = "net frozen"
        return int(proc.nats.pid)

    def thaw_network(self, rid: str) -> None:
        proc = self.procs[rid]
        if proc.nats is not None:
            with contextlib.suppress(psutil.Error):
                proc.nats.resume()
        proc.state = "running"

    async def stop_all(self) -> None:
        """TERM every replica (it stops its own nats-server), wait, then KILL leftovers."""
        running = [p for p in self.procs.values() if p.alive()]
        trees = {p.rid: self._tree(p) for p in running}
        for p in running:
            for member in trees[p.rid][1:]:
                with contextlib.suppress(psutil.Error):
                    member.resume()  # a stopped process would sit on its TERM
            with contextlib.suppress(ProcessLookupError):
                assert p.popen is not None
                p.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(p.alive() for p in running) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for p in running:
            left = [m for m in trees[p.rid] if _running(m)]
            for m in left:
                with contextlib.suppress(psutil.Error):
                    m.send_signal(signal.SIGKILL)
            _wait_gone(left, 5)
            if p.popen is not None:
                p.popen.wait()
            p.state = "stopped"


def _check_start_log(proc: Proc, log: Path, offset: int) -> None:
    """Fail fast on a replica that reported an error (it may not exit by itself)."""
    with open(log, "rb") as f:
        f.seek(offset)  # this start's output only
        text = f.read().decode(errors="replace")
    if "address already in use" in text:
        raise PortTaken(f"{proc.rid}: a port of site.json is in use by another program")
    if not proc.alive() or "tillmesh: error:" in text:
        tail = "\n  ".join(text.splitlines()[-6:])
        raise DemoError(f"{proc.rid} failed to start:\n  {tail}")


def _running(p: psutil.Process) -> bool:
    """Alive and not a zombie (an orphan's zombie is its new parent's to reap)."""
    try:
        return bool(p.is_running() and p.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.02)  # a few ms after SIGKILL; not worth an await point mid-fault
