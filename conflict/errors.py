"""Errors of merge semantics: conflicts, their resolution, and reports over the state.

They join the one tree under `core.errors.TillmeshError`::

    TillmeshError
    ├── ConflictError       business conflict handling
    │   ├── UnknownConflict
    │   ├── WrongStore      a stock fix must be appended by a till of its store
    │   └── PolicyError     (conflict.policies) a site policy cannot be read or set
    └── ReportError         a report asked for a grouping or window it cannot give
"""

from __future__ import annotations

from core.errors import TillmeshError

__all__ = [
    "ConflictError",
    "ReportError",
    "UnknownConflict",
    "WrongStore",
]


class ConflictError(TillmeshError):
    pass


class UnknownConflict(ConflictError):
    def __init__(self, conflict_id: str) -> None:
        super().__init__(f"no conflict with id {conflict_id!r}")
        self.conflict_id = conflict_id


class WrongStore(ConflictError):
    """A resolution would append stock events for `store` on `replica`, but stock
    events count in the store of the replica that appends them: it must be resolved
    on a till of `store`."""

    def __init__(self, conflict_id: str, store: str, replica: str) -> None:
        super().__init__(
            f"conflict {conflict_id} is about the stock of store {store!r}, and a stock event "
            f"appended on {replica!r} would not count there: resolve it on a till of store "
            f"{store!r} (accept works anywhere)"
        )
        self.conflict_id = conflict_id
        self.store = store
        self.replica = replica


class ReportError(TillmeshError):
    """A report was asked for with `what` = `value`, which it cannot give, for `reason`."""

    def __init__(self, what: str, value: object, reason: str) -> None:
        super().__init__(f"report: {what} {value!r}: {reason}")
        self.what = what
        self.value = value
        self.reason = reason
