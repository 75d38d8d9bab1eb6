"""tillmesh.replicas."""

__all__: list[str] = []
