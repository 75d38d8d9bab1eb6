"""Run the acquirer (`acquirer.py`) as a process: bind, say where, serve until signalled.

The port may be 0: the socket is bound here, before uvicorn starts, and the port it got
is written to `<data>/acquirer.url` and printed, so a test or the demo reads it back
rather than picking a free port in advance (a race between parallel runs).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from pathlib import Path

import uvicorn

from replicas.payments.acquirer import Behaviour, Ledger, create_acquirer

__all__ = ["KEY_FILE", "URL_FILE", "api_key", "serve_acquirer"]

URL_FILE = "acquirer.url"
KEY_FILE = "acquirer.key"  # the merchant's API key, made at first start (0600)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def api_key(path: Path) -> str:
    """The API key in `path`, made (random, readable by its owner only from its first
    byte) if missing; an empty file is an error, never a key everyone knows."""
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        tmp.replace(path)
    key = path.read_text().strip()
    if not key:
        raise SystemExit(f"tillmesh acquirer: {path} is empty: delete it to make a new key")
    return key


def serve_acquirer(
    data: Path, host: str, port: int, behaviour: Behaviour, key_file: Path | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers); records in `data/acquirer.db`,
    its API key in `key_file` (default `data/acquirer.key`, made if missing)."""
    data.mkdir(parents=True, exist_ok=True)
    key = api_key(key_file or data / KEY_FILE)
    ledger = Ledger(data / "acquirer.db")
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    tmp = data / (URL_FILE + ".tmp")
    tmp.write_text(url + "\n")
    tmp.replace(data / URL_FILE)  # readers never see half a line
    print(f"acquirer listening on {url}", flush=True)
    app = create_acquirer(ledger, behaviour, key)
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        ledger.close()
        sock.close()
