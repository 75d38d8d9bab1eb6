"""A PAN scan of files, as a QSA's tool does it: every byte of every file under a folder
(SQLite databases, their WAL, nats-server's store, logs, the acquirer's records) for
the card numbers of the major schemes - 16 digits from 4 or 51-55 or 6011, 15 from 34
or 37 - plain or in groups of four, that pass the Luhn check."""

from __future__ import annotations

import re
from pathlib import Path

from core.pan import luhn_ok

__all__ = ["scan_for_pans"]

_PAN = re.compile(
    rb"(?<![0-9])(?:(?:4[0-9]{3}|5[1-5][0-9]{2}|6011)([ -]?)[0-9]{4}\1[0-9]{4}\1[0-9]{4}"
    rb"|3[47][0-9]{13})(?![0-9])"
)


def scan_for_pans(root: Path) -> list[tuple[str, int]]:
    """(file, offset) of every card number found under `root`."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        for m in _PAN.finditer(data):
            if luhn_ok(re.sub(rb"[ -]", b"", m.group()).decode()):
                found.append((str(path.relative_to(root)), m.start()))
    return found
