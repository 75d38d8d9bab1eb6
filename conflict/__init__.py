"""conflict: merge semantics. Events in, CRDT state out, conflicts reported.

- `crdt`: small pure CRDT values, the specification;
- `state.StoreState`: the `StateFold` the log calls, folding batches into `st_` tables;
- `queries`: the read side, including `state_digest` (equal event sets, equal digest).

Imports only `core`.
"""

from conflict.state import StoreState

__all__ = ["StoreState"]
