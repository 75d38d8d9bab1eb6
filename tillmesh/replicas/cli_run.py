"""Running replicas: `site init`, `till`, `hq`, `status`."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Filled in by the replica runtime."""
