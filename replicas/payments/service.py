"""Run the acquirer (`acquirer.py`) as a process: bind, say where, serve until signalled.

The port may be 0: the socket is bound here, before uvicorn starts, and the port it got
is written to `<data>/acquirer.url` and printed, so a test or the demo reads it back
rather than picking a free port in advance (a race between parallel runs).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn

from replicas.payments.acquirer import Behaviour, Ledger, create_acquirer

__all__ = ["URL_FILE", "serve_acquirer"]

URL_FILE = "acquirer.url"


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def serve_acquirer(data: Path, host: str, port: int, behaviour: Behaviour) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers); records in `data/acquirer.db`."""
    data.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(data / "acquirer.db")
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    tmp = data / (URL_FILE + ".tmp")
    tmp.write_text(url + "\n")
    tmp.replace(data / URL_FILE)  # readers never see half a line
    print(f"acquirer listening on {url}", flush=True)
    config = uvicorn.Config(create_acquirer(ledger, behaviour), log_level="warning", lifespan="off")
    try:
        asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
    finally:
        ledger.close()
        sock.close()
