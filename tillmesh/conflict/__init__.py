"""tillmesh.conflict."""

__all__: list[str] = []
