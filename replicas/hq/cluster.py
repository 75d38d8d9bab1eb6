"""A throwaway PostgreSQL server: Debian's postgresql-15 binaries, initdb into a folder.

For the tests and `tillmesh demo --hq-db postgresql`: a real server, run as an
unprivileged user (PostgreSQL refuses to run as root), listening on localhost on a
free port, with trust authentication (local and throwaway only). Stopped by its pid.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from replicas.errors import ReplicaError

__all__ = ["PG_BIN", "LocalPostgres", "postgres_missing"]

PG_BIN = Path(os.environ.get("TILLMESH_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Sized for ingest benches on a small machine; fsync stays on (durability is measured).
SETTINGS = {
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_connections": "50",
    "unix_socket_directories": "",  # TCP only: no socket file to place
}


def postgres_missing() -> str | None:
    """Why a local PostgreSQL cannot be run here, or None."""
    for tool in ("initdb", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} missing (make system-deps installs postgresql-15)"
    try:
        pwd.getpwnam(_user())
    except KeyError:
        return f"no user {_user()!r} to run PostgreSQL as"
    return None


def _user() -> str:
    return os.environ.get("TILLMESH_PG_USER", "postgres")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalPostgres:
    """`with LocalPostgres(folder) as pg: pg.dsn` - initdb, start, and stop by pid."""

    def __init__(self, folder: Path, database: str = "tillmesh") -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.database = database
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://{_user()}@127.0.0.1:{self.port}/{self.database}"

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _as_user(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        return ["runuser", "-u", _user(), "--", *argv]

    def _initdb(self) -> list[str]:
        # C locale: text sorts bytewise, as in SQLite (reports order rows the same).
        flags = ["-A", "trust", "-U", _user(), "-E", "UTF8", "--locale=C", "--no-sync"]
        return [str(PG_BIN / "initdb"), "-D", str(self.data), *flags]

    def start(self) -> None:
        missing = postgres_missing()
        if missing:
            raise ReplicaError(missing)
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self.folder.chmod(0o755)
            shutil.chown(self.folder, _user())
        if not self.data.exists():
            done = subprocess.run(
                self._as_user(self._initdb()),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:  # e.g. a parent folder the user cannot enter
                raise ReplicaError(f"initdb {self.data}: {done.stderr.strip()[-500:]}")
        self.port = _free_port()
        options = [f"-c{k}={v}" for k, v in SETTINGS.items()]
        argv = [str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-h", "127.0.0.1", *options]  # fmt: skip
        log = (self.folder / "postgres.log").open("ab")
        self.process = subprocess.Popen(self._as_user(argv), stdout=log, stderr=log)
        log.close()
        self._wait_ready()
        self._create_database()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = (self.folder / "postgres.log").read_text(errors="replace")[-2000:]
                raise ReplicaError(f"postgres exited ({self.process.returncode}): {tail}")
            ready = subprocess.run(
                [str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        self.stop()
        raise ReplicaError(f"postgres not ready in {START_TIMEOUT}s")

    def _create_database(self) -> None:
        psql = [str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", _user(),
                "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt"]  # fmt: skip
        exists = subprocess.run(
            [*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, "-c", f"CREATE DATABASE {self.database}"], check=True,
                           capture_output=True)  # fmt: skip

    def postmaster_pid(self) -> int | None:
        """The server's own pid, from the pid file it writes (runuser, its parent, waits)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """SIGINT (fast shutdown) to the postmaster by its pid, SIGKILL if it lingers;
        then runuser (its parent) exits with it."""
        if self.process is None or self.process.poll() is not None:
            return
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(STOP_TIMEOUT)
