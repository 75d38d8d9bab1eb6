"""What the browser tests share: Debian's Chromium, driven by Playwright (a test extra),
with no browser download; `make test`'s set-up installs it where missing. The
`chromium` fixture (tests/conftest.py) skips where it is absent."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots (git-ignored)
UI_TIMEOUT_MS = 15_000
