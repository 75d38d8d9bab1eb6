"""Events, clocks, version vectors and the durable event log. No network, no merge rules."""

__all__: list[str] = []
