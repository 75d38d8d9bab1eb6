"""tillmesh.broker."""

__all__: list[str] = []
