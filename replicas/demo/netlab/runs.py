"""Runs of the lab: the name prefix each network's namespaces and interfaces carry, which
runs still live, and removing what dead runs left behind.

A network's prefix is `tmk<pid><letter>` (`tmk` marks the lab, the pid and a letter make
the run unique on the machine). A run is alive while its process is; a newer process that
got a dead run's pid does not keep that run alive (it started after the run made things).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from replicas.demo.netlab.commands import NetlabError, ip, namespaces, netns_pids, root_links
from replicas.demo.netlab.processes import stop_pids

__all__ = [
    "KIT",
    "NETNS_DIR",
    "claim_prefix",
    "leftovers",
    "purge",
    "release_prefix",
    "remove_stale",
    "stale_namespaces",
]

KIT = "tmk"  # every name the lab gives starts with it
NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins a namespace
# `tmk<pid><letter>-<name>` for namespaces, `tmk<pid><letter><h|s|b><n>` for interfaces
RUN_NS = re.compile(rf"^({KIT}(\d+)[a-z])-")
RUN_LINK = re.compile(rf"^({KIT}(\d+)[a-z])[hsb]\d+$")

_OPEN: set[str] = set()  # prefixes of this process's networks not yet closed


def claim_prefix() -> str:
    """`tmk<pid><letter>` for a network opening now: unique on the machine while this
    process has fewer than 26 networks open at once."""
    for letter in "abcdefghijklmnopqrstuvwxyz":
        prefix = f"{KIT}{os.getpid()}{letter}"
        if prefix not in _OPEN:
            _OPEN.add(prefix)
            return prefix
    raise NetlabError("26 networks open in one process: close one first")


def release_prefix(prefix: str) -> None:
    """The network of `prefix` is closed: its leftovers, if any, are stale."""
    _OPEN.discard(prefix)


def _run_alive(prefix: str, pid: int, made: float | None) -> bool:
    """Whether run `prefix` (of process `pid`) still runs: its process lives, and is not a
    newer process that got the pid of a dead run, i.e. started after the run made a thing
    at `made` (a timestamp, when known)."""
    if pid == os.getpid():
        return prefix in _OPEN
    try:
        owner = psutil.Process(pid)
        if owner.status() == psutil.STATUS_ZOMBIE:
            return False
        started = owner.create_time()
    except psutil.NoSuchProcess:
        return False
    return made is None or started <= made + 2  # create_time is precise to about a second


def _made(ns: str) -> float | None:
    """When namespace `ns` was made (its pin's time), None if unknown."""
    try:
        return (NETNS_DIR / ns).stat().st_mtime
    except OSError:
        return None


def stale_namespaces() -> list[str]:
    """Namespaces of lab runs that no longer run."""
    stale = []
    for ns in namespaces():
        m = RUN_NS.match(ns)
        if m and not _run_alive(m[1], int(m[2]), _made(ns)):
            stale.append(ns)
    return stale


def _stale_links() -> list[str]:
    """Interfaces of dead runs in the root namespace. The lab never makes any, but a run of
    an older version, or a person, may have; they go like the namespaces."""
    stale = []
    for name in root_links():
        m = RUN_LINK.match(name)
        if m and not _run_alive(m[1], int(m[2]), None):
            stale.append(name)
    return stale


def purge(ns: str) -> list[int]:
    """Stop every process in `ns`, delete it; the PIDs that would not die."""
    left = stop_pids(netns_pids(ns))
    with contextlib.suppress(NetlabError):  # someone else deleted it meanwhile
        ip("netns", "del", ns)
    return left


def remove_stale() -> list[str]:
    """Delete what runs of the lab that are no longer running left behind (namespaces, with
    every process inside them, and interfaces); what was removed. Live runs, in this process
    or another, are left alone."""
    removed = []
    for ns in stale_namespaces():
        left = purge(ns)
        removed.append(f"namespace {ns}" + (f" (pids {left} would not die)" if left else ""))
    for name in _stale_links():
        with contextlib.suppress(NetlabError):
            ip("link", "del", name)
            removed.append(f"link {name}")
    return removed


def leftovers(prefix: str = KIT) -> list[str]:
    """Namespaces and root-namespace interfaces on the machine whose name starts with
    `prefix` (the lab's own mark by default; a network's `prefix` for one run)."""
    found = [f"namespace {ns}" for ns in namespaces() if ns.startswith(prefix)]
    found += [f"link {name}" for name in root_links() if name.startswith(prefix)]
    return found
