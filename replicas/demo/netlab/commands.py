"""The `ip` command, inside a namespace or on the machine: every change the lab makes to
the machine's networking goes through `ip`, and fails as a `NetlabError` naming it."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

__all__ = [
    "CMD_TIMEOUT",
    "NetlabError",
    "in_ns",
    "ip",
    "namespaces",
    "netns_pids",
    "root_links",
    "sysctl",
]

CMD_TIMEOUT = 10.0  # one `ip` command; they take milliseconds


class NetlabError(RuntimeError):
    """An `ip` command failed, or the lab could not leave the machine clean."""


def ip(*args: str, ns: str | None = None) -> str:
    """Run `ip [-n ns] args`; its stdout, or NetlabError with the command and its stderr."""
    argv = ["ip", *(["-n", ns] if ns else []), *args]
    try:
        done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=CMD_TIMEOUT)
    except FileNotFoundError:
        raise NetlabError("the `ip` command is missing (install iproute2)") from None
    except subprocess.CalledProcessError as e:
        raise NetlabError(f"`{' '.join(argv)}` failed: {e.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise NetlabError(f"`{' '.join(argv)}` took over {CMD_TIMEOUT}s") from None
    return done.stdout


def in_ns(ns: str, argv: Sequence[str]) -> list[str]:
    """`argv` run inside `ns` (`ip netns exec` execs it: the PID is the command's own)."""
    return ["ip", "netns", "exec", ns, *argv]


def sysctl(ns: str, *settings: str) -> None:
    # sysctls under net/ are per namespace: they must be written from inside it
    ip("netns", "exec", ns, "sysctl", "-qw", *settings)


def namespaces() -> list[str]:
    """Every named namespace on the machine (`ip netns list` prints `name (id: 3)`)."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def root_links() -> list[str]:
    """Names of the root namespace's interfaces (`3: name@peer: <...`)."""
    return [line.split(":")[1].strip().split("@")[0] for line in ip("-o", "link").splitlines()]


def netns_pids(ns: str) -> list[int]:
    """Every process inside namespace `ns`; none once it is gone."""
    try:
        return [int(pid) for pid in ip("netns", "pids", ns).split()]
    except NetlabError:
        return []  # already gone
