"""How executions and nodes end: the status enums and the one `Ending` value.

An execution ends exactly once, with an `Ending`: its status, the error text and type (the
name of an exception class in `actors.errors`, or of the node's own exception), and the
reason given to the nodes that never got to run. Every way out (a node's final failure, an
open breaker, HALT, cancel, stop, a deadline, an internal error) builds one of these, so
the closing code has a single shape to handle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from actors.errors import (
    Cancelled,
    ExecutionTimeout,
    Halted,
    InternalError,
    Interrupted,
    describe,
    type_name,
)


class ExecutionStatus(StrEnum):
    """An execution's status, as events, results and the journal carry it."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    HALTED = "halted"
    CANCELLED = "cancelled"
    #: The process died under it; found and published at recovery.
    INTERRUPTED = "interrupted"
    #: Never admitted (HALT, or the admission queue full).
    REFUSED = "refused"


class NodeStatus(StrEnum):
    """A node's status within one execution (`result.nodes`, `execution.nodes`)."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class SkipReason(StrEnum):
    """Why a node did not run (`node_skipped.reason`)."""

    CONDITION_FALSE = "condition_false"
    UPSTREAM_FAILED = "upstream_failed"
    HALTED = "halted"
    REDUCE_ONLY = "reduce_only"
    CIRCUIT_OPEN = "circuit_open"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({
    ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.HALTED,
    ExecutionStatus.CANCELLED, ExecutionStatus.INTERRUPTED, ExecutionStatus.REFUSED})

#: The terminal event type for each status an execution can close with.
TERMINAL_EVENT: dict[str, str] = {
    ExecutionStatus.COMPLETED: "execution_completed",
    ExecutionStatus.FAILED: "execution_failed",
    ExecutionStatus.HALTED: "execution_halted",
    ExecutionStatus.CANCELLED: "execution_cancelled",
    ExecutionStatus.INTERRUPTED: "execution_failed",
}


@dataclass(frozen=True, slots=True)
class Ending:
    """How one execution ends. `error_type` is None exactly when it completed."""

    status: ExecutionStatus
    error: str | None = None
    error_type: str | None = None
    #: The `node_skipped.reason` for nodes that had not started (those below a failed
    #: node get `upstream_failed` instead).
    skip_reason: SkipReason = SkipReason.CANCELLED

    @classmethod
    def completed(cls) -> Ending:
        return _COMPLETED

    @classmethod
    def failed(cls, error: str, error_type: str) -> Ending:
        """A node failed finally (its own exception type, or NodeTimeout, CircuitOpen...)."""
        return cls(ExecutionStatus.FAILED, error, error_type)

    @classmethod
    def halted(cls, reason: str) -> Ending:
        return cls(ExecutionStatus.HALTED, f"halted: {reason}", Halted.__name__,
                   SkipReason.HALTED)

    @classmethod
    def cancelled(cls, why: str) -> Ending:
        return cls(ExecutionStatus.CANCELLED, f"cancelled: {why}", Cancelled.__name__)

    @classmethod
    def timed_out(cls, timeout_s: float | None) -> Ending:
        return cls(ExecutionStatus.FAILED,
                   f"execution overran the workflow timeout_s={timeout_s}",
                   ExecutionTimeout.__name__)

    @classmethod
    def interrupted(cls) -> Ending:
        return cls(ExecutionStatus.INTERRUPTED,
                   "interrupted: the daemon stopped while it was queued or running",
                   Interrupted.__name__)

    @classmethod
    def internal(cls, error: BaseException) -> Ending:
        return cls(ExecutionStatus.FAILED,
                   f"internal error: {type_name(error)}: {describe(error)}",
                   InternalError.__name__)

    @property
    def terminal_event(self) -> str:
        return TERMINAL_EVENT[self.status]


_COMPLETED = Ending(ExecutionStatus.COMPLETED)
