"""Files only their owner may read: seeds, private keys, nats-server configs (a till's
holds its leaf seed), API tokens, bundles."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path`, readable by the owner only (0600) from the first byte:
    writing first and chmod-ing after would leave a window where others may read it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        os.write(fd, data)
    finally:
        os.close(fd)
