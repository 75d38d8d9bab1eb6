"""tillmesh: offline-first point of sale replication."""

__all__ = ["__version__"]
__version__ = "0.1.0"
