"""Checking big frames of remote events in a worker process (`WorkerChecker`), so a
catch-up's checking (decode, hash, typed body, signatures) runs on another core than the
log's writer, instead of taking turns with it for one interpreter lock.

Measured (issue 19, py-spy on a till catching up): the writer thread was busy 97% of
the time, and its SQLite calls, which let go of the lock per row, waited for the loop
thread's checking to hand it back. The worker runs `check_events` exactly as the caller
would and returns per event only its hash and a few flags; the caller decodes the typed
body again without the checks (~1 µs instead of ~8 for all of checking) and builds the
same `CheckedEvent`s. Any event the worker finds wrong sends the whole frame back to the
caller's own `check_events`, so refusals, their order and their messages are exactly
those of the in-process path (hostile frames are rare; honest ones are never refused).

    checker = WorkerChecker()
    checked = await checker.check(raw_events, heads, verifier)   # None: check in-process
    await checker.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import logging
import multiprocessing
import signal
import sys
from collections.abc import Sequence

import msgspec

from core.checks import CHECK_SLICE, CheckedEvent, Head, check_events
from core.events import RawEvent, decode_checked_body, decode_event, encode_event
from core.keys import KeyRegistry

__all__ = ["MIN_WORKER_EVENTS", "WorkerChecker"]

logger = logging.getLogger(__name__)

# Smaller ingests (a pushed sale, a few events) are checked in the caller: the round
# trip to the worker (~1 ms of pickling and pipes) would cost more than it frees.
MIN_WORKER_EVENTS = 512
KNOWN, UNSIGNED, STRIPPED, UNKNOWN_TYPE = 1, 2, 4, 8
Verdict = tuple[bytes, int]  # (event hash, flags)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> None:
    """In the worker: killed when the till is, so a killed till leaves no orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def check_in_worker(
    raws: list[bytes], heads: dict[str, Head], verifier: KeyRegistry | None
) -> list[Verdict] | None:
    """In the worker: `check_events` of the envelopes; None if any event is refused."""
    items: list[RawEvent] = []
    for raw in raws:
        try:
            items.append(RawEvent(decode_event(raw), raw))
        except Exception:
            return None
    checked = [
        c
        for i in range(0, len(items), CHECK_SLICE)  # in the caller's slices: alike everywhere
        for c in check_events(items[i : i + CHECK_SLICE], heads, verifier)
    ]
    out: list[Verdict] = []
    for item, c in zip(items, checked, strict=True):
        if c.error is not None:
            return None
        flags = KNOWN if c.known else 0
        if not c.known:
            flags |= UNSIGNED if c.unsigned else 0
            flags |= STRIPPED if c.raw != item.raw else 0
            flags |= UNKNOWN_TYPE if c.body is None else 0
        out.append((c.hash, flags))
    return out


def _rebuild(item: RawEvent, verdict: Verdict) -> CheckedEvent:
    """In the caller: the `CheckedEvent` the worker's `check_events` made."""
    h, flags = verdict
    ev, raw = item.event, item.raw
    if flags & KNOWN:
        return CheckedEvent(ev, h, b"", None, known=True)
    if flags & STRIPPED:  # its signature covered by a newer one's, through the chain
        ev = msgspec.structs.replace(ev, sig=b"")
        raw = encode_event(ev)
    body = None if flags & UNKNOWN_TYPE else decode_checked_body(ev)
    return CheckedEvent(ev, h, raw, body, unsigned=bool(flags & UNSIGNED))


class WorkerChecker:
    """One worker process, started at the first big frame, for the log's life."""

    def __init__(self) -> None:
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self.broken = False  # the worker failed once: every later frame is checked in-process

    def usable(self, events: Sequence[object], verifier: object) -> bool:
        """Whether `events` go to the worker: big, all with their bytes, and checked by
        nobody or the site's `KeyRegistry` (which the worker can be handed)."""
        return (
            not self.broken
            and len(events) >= MIN_WORKER_EVENTS
            and (verifier is None or isinstance(verifier, KeyRegistry))
            and all(isinstance(e, RawEvent) for e in events)
        )

    async def check(
        self, events: Sequence[RawEvent], heads: dict[str, Head], verifier: KeyRegistry | None
    ) -> list[CheckedEvent] | None:
        """The `CheckedEvent`s of `events`, checked in the worker; None when the caller
        must check them itself (some event is refused, or the worker failed)."""
        origins = {item.event.origin for item in events}
        wanted = {o: heads[o] for o in origins if o in heads}
        raws = [item.raw for item in events]
        try:
            loop = asyncio.get_running_loop()
            verdicts = await loop.run_in_executor(
                self._started(), check_in_worker, raws, wanted, verifier
            )
        except (concurrent.futures.process.BrokenProcessPool, OSError, RuntimeError) as e:
            logger.warning("checking worker failed (%s): checking in-process from now on", e)
            self.broken = True
            await self.close()
            return None
        if verdicts is None:
            return None
        return [_rebuild(item, v) for item, v in zip(events, verdicts, strict=True)]

    def _started(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: workers forked from a fresh interpreter that loaded this module
            # only (not the till's threads, locks or sockets, nor its whole __main__ as
            # spawn would: 78 MB of RSS measured, against ~25)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=context, initializer=_die_with_parent
            )
        return self._pool

    def pids(self) -> list[int]:
        """The worker's process id, once started (for tests and `ps`)."""
        if self._pool is None:
            return []
        return list(self._pool._processes)

    async def close(self) -> None:
        """Stop the worker and wait for it (in a thread: the loop keeps serving)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
