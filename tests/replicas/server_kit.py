"""A real till (or HQ) API server for browser and fuzz tests (no tests here): uvicorn
serving `create_app` on 127.0.0.1 (an ephemeral port) from a thread with its own event
loop, over a real EventLog with a small catalog, offline (no sync)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from conflict.state import StoreState
from core.events import ProductUpserted
from core.log import EventLog
from replicas.api.app import create_app
from replicas.api.auth import Access
from replicas.api.tokens import TokenStore
from replicas.payments.adapter import CardProcessor
from replicas.payments.reversals import PendingReversals

__all__ = ["TILL", "OfflineReplica", "TillServer"]

TILL = "s1/t1"


@dataclass
class OfflineReplica:
    """A till cut off from the network, with two sales HQ has not confirmed."""

    replica_id: str
    log: EventLog
    hq_holds_all: bool = False  # the test flips it: HQ's vector reached us
    reversals: PendingReversals | None = None  # no card processor: nothing asked

    def card_processor(self) -> CardProcessor | None:
        return None

    def sync_status(self) -> dict[str, object]:
        return {}

    def online(self) -> bool:
        return False

    async def rotate_key(self) -> tuple[str, int]:
        raise AssertionError("the kit's log signs nothing: the API answers 409 before this")

    def unsynced_to_hq(self) -> int:
        return 2

    def holders(self, origin: str, seq: int) -> list[str]:
        return [self.replica_id, *(["hq"] if self.hq_holds_all else [])]


class TillServer:
    """uvicorn + EventLog on a private event loop in a thread; `stop()` ends both."""

    def __init__(self, db: Path, replica_id: str = TILL, tokens: TokenStore | None = None) -> None:
        """`tokens`: the API checks them (none: an open demo till)."""
        self.db, self.replica_id, self.tokens = db, replica_id, tokens
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server: uvicorn.Server | None = None
        self.replica: OfflineReplica | None = None  # set once the server thread opens the log
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="till-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # reported by start()/stop() in the test thread
            self.error = e

    async def _serve(self) -> None:
        async with await EventLog.open(self.db, self.replica_id, StoreState()) as log:
            await log.append(ProductUpserted(sku="COLA", name="Cola 33cl", price=150))
            await log.append(ProductUpserted(sku="BREAD", name="Bread", price=250))
            self.replica = OfflineReplica(self.replica_id, log)
            app = create_app(self.replica, access=Access(self.tokens))
            config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none")
            self.server = uvicorn.Server(config)
            await self.server.serve(sockets=[self.sock])

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.thread.is_alive():
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"till server did not start: {self.error!r}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=20)
        self.sock.close()
        assert not self.thread.is_alive(), "till server thread did not stop"
