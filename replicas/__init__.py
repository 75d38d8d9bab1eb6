"""A tillmesh replica, in rooms: `runtime` (one till or HQ process) and `site` (the
site's description) at the root; `api` (HTTP routers, models, the till page), `sync`
(the pure protocol, its one driver, the NATS transport), `ops` (replay, diff, export,
restore), `cli` (one module per command group) and `demo` (the story with real faults).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tillmesh")
except PackageNotFoundError:  # a source tree run without installing
    __version__ = "0+unknown"

__all__ = ["__version__"]
