"""`python -m replicas.demo.netlab [--clean]`: list (or remove) the lab's leftovers, e.g.
of a demo or test run killed before its teardown."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from replicas.demo.netlab.runs import leftovers, remove_stale, stale_namespaces


def main(argv: Sequence[str]) -> int:
    if "--clean" in argv:
        for what in remove_stale():
            print(f"removed {what}")
        return 0
    stale = set(stale_namespaces())
    for what in leftovers():
        name = what.split()[-1]
        print(f"{what} ({'stale' if name in stale else 'live run'})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
