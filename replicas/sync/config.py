"""The sync engine's knobs (`SyncConfig`) and the vocabulary of incidents it records.

Kept apart from the engine so the runtime, the tests and status readers can name a
configuration or an incident kind without the state machine.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicas.sync.protocol import DEFAULT_MAX_FRAME_BYTES, MIN_FRAME_BYTES

__all__ = [
    "ADMITTED_TIMEOUT_FACTOR",
    "BAD_FRAME",
    "BAD_SCOPE",
    "BUSY",
    "DUPLICATE_FRAME",
    "FORGED_REPLY",
    "HOSTILE_KINDS",
    "MAX_ADMITTED_PER_PEER",
    "OUT_OF_SCOPE_REQUEST",
    "REJECTED",
    "SHORT",
    "STRAY_REQUEST",
    "TIMEOUT",
    "UNNAMED",
    "SyncConfig",
]

# Incident kinds. Hostile ones back the peer off; the others are only counted.
BAD_FRAME = "bad_frame"  # undecodable, oversized, wrong sender
REJECTED = "rejected"  # the log refused events it sent (chain, scope, equivocation...)
SHORT = "short"  # announced events it then did not serve
BAD_SCOPE = "bad_scope"  # announced a scope its id does not have
OUT_OF_SCOPE_REQUEST = "out_of_scope_request"  # asked for origins it may not hold
FORGED_REPLY = "forged_reply"  # a pull whose reply inbox is not its requester's own
STRAY_REQUEST = "stray_request"  # a pull on a subject naming no requester we serve
TIMEOUT = "timeout"  # a pull got no (usable) reply in time
BUSY = "busy"  # a pull reply made no progress but promised more
DUPLICATE_FRAME = "duplicate_frame"  # a frame of only known events (replay or leaf echo)
HOSTILE_KINDS = frozenset(
    {BAD_FRAME, REJECTED, SHORT, BAD_SCOPE, OUT_OF_SCOPE_REQUEST, FORGED_REPLY}
)
# The peer an incident is recorded under when no fenced subject names one (a stray
# request): one fixed name, so what a stranger writes cannot grow the incident table.
UNNAMED = "?"
# Replies of one peer waiting for (or in) the log: one being written, the next checked
# (in the checking worker), two more read ahead, so the writer never waits for the wire.
# Measured (issue 19, py-spy on a till catching up 300k events): with 2 the writer was
# busy 64% of the catch-up, with 4 89%. A reply is at most pull_window events (~0.5 MB).
MAX_ADMITTED_PER_PEER = 4
# An admitted reply is forgotten after this many pull timeouts if its ingest was never
# reported (a backstop: HQ after an outage can queue frames for many seconds).
ADMITTED_TIMEOUT_FACTOR = 12


@dataclass(frozen=True)
class SyncConfig:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # both directions; NATS max_payload
    pull_window: int = 2000  # most events asked for (and served) per pull request
    pull_timeout: float = 5.0
    announce_interval: float = 5.0  # periodic vv announcement, also our liveness signal
    announce_min_gap: float = 0.2  # change-triggered announcements are at most this often
    push_linger: float = 0.0  # > 0: hold own events this long so a burst shares frames
    # Events per second served to one requester. It bounds what one catching-up
    # replica can take from us; the cost of serving is a read on the WAL reader's
    # thread and frame bytes on the loop (~1 µs/event), so sales are not held up.
    serve_rate: float = 200_000.0
    serve_burst: int = 20_000
    retry_backoff: float = 2.0  # after a timeout or a busy reply
    incident_backoff: float = 10.0  # first backoff after a hostile incident; doubles
    incident_backoff_max: float = 600.0

    def __post_init__(self) -> None:
        if self.max_frame_bytes < MIN_FRAME_BYTES:
            raise ValueError(f"max_frame_bytes must be >= {MIN_FRAME_BYTES}")
        if self.pull_window < 1 or self.serve_burst < 1 or self.serve_rate <= 0:
            raise ValueError("pull_window, serve_burst and serve_rate must be positive")
