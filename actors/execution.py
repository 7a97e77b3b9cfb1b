"""Execution records: what a supervisor tracks per execution, and what a caller holds."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any

import structlog

from actors.workflow import NodeContext

if TYPE_CHECKING:
    from actors.workflow import Workflow

_log = structlog.get_logger("tradeloom.execution")

QUEUED, RUNNING = "queued", "running"
COMPLETED, FAILED, HALTED, CANCELLED = "completed", "failed", "halted", "cancelled"
INTERRUPTED, REFUSED = "interrupted", "refused"
TERMINAL_STATUSES = frozenset({COMPLETED, FAILED, HALTED, CANCELLED, INTERRUPTED, REFUSED})
#: The terminal event type for each terminal status.
TERMINAL_EVENT = {
    COMPLETED: "execution_completed", FAILED: "execution_failed", HALTED: "execution_halted",
    CANCELLED: "execution_cancelled", INTERRUPTED: "execution_failed",
}
# Node statuses in ExecutionResult.nodes.
N_PENDING, N_RUNNING, N_COMPLETED = "pending", "running", "completed"
N_FAILED, N_SKIPPED, N_CANCELLED = "failed", "skipped", "cancelled"


class ExecutionIds:
    """`exec_<workflow_id>_<8 hex>` ids that never repeat within a process.

    A counter from a random start is passed through a bijection of 32-bit integers
    (multiply by an odd constant, xor a random salt), so ids look random but cannot clash
    until 2**32 have been issued. `taken` lets a journal veto ids used by earlier runs.
    """

    def __init__(self, taken: Callable[[str], bool] | None = None) -> None:
        seed = int.from_bytes(os.urandom(8), "little")
        self._counter = count(seed & 0xFFFFFFFF)
        self._salt = seed >> 32
        self._taken = taken

    def new(self, workflow_id: str) -> str:
        while True:
            n = (next(self._counter) * 0x9E3779B1 ^ self._salt) & 0xFFFFFFFF
            execution_id = f"exec_{workflow_id}_{n:08x}"
            if self._taken is None or not self._taken(execution_id):
                return execution_id


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of one execution, as `handle.result()` returns it."""

    execution_id: str
    workflow_id: str
    status: str
    results: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    duration_ms: float = 0.0
    started_at: str | None = None
    ended_at: str | None = None
    #: The finished execution record; `nodes` is computed from it on demand.
    execution: Execution | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == COMPLETED

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        """node_id -> {"status", "attempts", "outputs" | "error", "error_type"}."""
        exe = self.execution
        if exe is None:
            return {}
        report: dict[str, dict[str, Any]] = {}
        for i, node in enumerate(exe.workflow.nodes):
            entry: dict[str, Any] = {"status": exe.node_status[i], "attempts": exe.attempts[i]}
            if node.id in exe.outputs:
                entry["outputs"] = exe.outputs[node.id]
            elif node.id in exe.errors:
                entry["error"], entry["error_type"] = exe.errors[node.id]
            report[node.id] = entry
        return report


class ExecutionHandle:
    """A caller's view of one execution: its id now, its result later."""

    __slots__ = ("_callbacks", "_lock", "_result", "_waiter", "execution_id", "workflow_id")

    def __init__(self, execution_id: str, workflow_id: str) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self._result: ExecutionResult | None = None
        self._callbacks: list[Callable[[ExecutionHandle], None]] | None = []
        self._lock = threading.Lock()
        # Held until the result is in: the cheapest one-shot latch CPython offers.
        self._waiter = threading.Lock()
        self._waiter.acquire()

    def done(self) -> bool:
        return self._result is not None

    def result(self, timeout: float | None = None) -> ExecutionResult:
        """Wait for the outcome; raises TimeoutError if it is not in within `timeout`."""
        result = self._result
        if result is None:
            if not self._waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise TimeoutError(f"{self.execution_id} not finished within {timeout} s")
            self._waiter.release()
            result = self._result
            assert result is not None
        return result

    def add_done_callback(self, fn: Callable[[ExecutionHandle], None]) -> None:
        """Call `fn(handle)` once the result is in (at once if it already is)."""
        with self._lock:
            if self._callbacks is not None:
                self._callbacks.append(fn)
                return
        fn(self)

    def _resolve(self, result: ExecutionResult) -> None:
        with self._lock:
            if self._result is not None:
                return
            self._result = result
            callbacks, self._callbacks = self._callbacks, None
        self._waiter.release()
        for fn in callbacks or ():
            try:
                fn(self)
            except Exception:  # noqa: BLE001 - a caller's callback must not break the engine
                _log.exception("done_callback_failed", execution_id=self.execution_id)

    def __repr__(self) -> str:
        status = self._result.status if self._result else "pending"
        return f"ExecutionHandle({self.execution_id!r}, {status})"


class Execution:
    """A supervisor's private record of one execution (touched only by its thread)."""

    __slots__ = (
        "attempts",
        "bot_id",
        "closed",
        "completed",
        "end_on_start",
        "errors",
        "exempt_from_halt",  # kill-switch: on-halt hook executions
        "finished",
        "handle",
        "head",
        "id",
        "inputs",
        "node_status",
        "outputs",
        "priority",
        "remaining",
        "restarts",
        "runs",
        "started_event",
        "started_mono",
        "started_wall",
        "status",
        "strategy_id",
        "workflow",
    )

    def __init__(self, *, execution_id: str, workflow: Workflow, inputs: Mapping[str, Any],
                 bot_id: str | None, strategy_id: str | None, priority: int,
                 handle: ExecutionHandle) -> None:
        n = len(workflow.nodes)
        self.id = execution_id
        self.workflow = workflow
        self.inputs = inputs
        self.bot_id = bot_id
        self.strategy_id = strategy_id
        self.priority = priority
        self.handle: ExecutionHandle | None = handle
        self.status = QUEUED
        # The fields every workflow event of this execution starts with.
        self.head = {
            "v": 1, "execution_id": execution_id, "correlation_id": execution_id,
            "workflow_id": workflow.id, "bot_id": bot_id, "strategy_id": strategy_id,
        }
        self.node_status = [N_PENDING] * n
        self.attempts = [0] * n
        self.remaining = [len(d) for d in workflow.deps]
        self.outputs: dict[str, Any] = {}
        self.errors: dict[str, tuple[str, str]] = {}
        self.restarts: dict[int, list[float]] = {}
        self.runs: dict[int, NodeRun] = {}
        self.completed = 0
        self.finished = 0
        self.closed = False
        self.started_mono = 0.0
        self.started_wall = 0.0
        self.started_event: dict[str, Any] = {}
        #: Set for a queued execution taken out to be ended (cancel, shutdown): the
        #: supervisor ends it with (status, error, error_type, skip_reason) on start.
        self.end_on_start: tuple[str, str, str, str] | None = None
        # kill-switch: an on-halt hook (Engine._submit_hook): started and run in HALT, not
        # ended by the halt broadcast, its actions admitted as reduces_risk.
        self.exempt_from_halt = False


    # -- what happens to nodes; each returns the event that says so ----------------------

    def skip(self, i: int, reason: str) -> dict[str, Any]:
        self.node_status[i] = N_SKIPPED
        self.finished += 1
        return {**self.head, "type": "node_skipped", "node_id": self.workflow.nodes[i].id,
                "reason": reason}

    def skip_with_descendants(self, i: int, reason: str) -> list[dict[str, Any]]:
        events = [self.skip(i, reason)]
        for j in self.workflow.descendants[i]:
            if self.node_status[j] == N_PENDING:
                events.append(self.skip(j, reason))
        return events

    def progress(self, now: float) -> dict[str, Any]:
        total = len(self.node_status)
        done = self.finished
        elapsed_ms = (now - self.started_mono) * 1000.0
        eta = round(elapsed_ms / done * (total - done), 3) if done else None
        return {**self.head, "type": "progress", "nodes_completed": self.completed,
                "nodes_total": total, "nodes_in_progress": len(self.runs), "eta_ms": eta}

    def close_nodes(self, skip_reason: str, downstream: Collection[int],
                    events: list[dict[str, Any]]) -> list[NodeRun]:
        """The execution is closing (under the sequencing lock): nodes that did not start
        are skipped (appending their events), running ones are marked cancelled and
        returned, for the caller to tell them."""
        running: list[NodeRun] = []
        for i, status in enumerate(self.node_status):
            if status == N_PENDING:
                reason = "upstream_failed" if i in downstream else skip_reason
                events.append(self.skip(i, reason))
            elif status == N_RUNNING:
                run = self.runs.get(i)
                if run is not None and not run.started:
                    events.append(self.skip(i, skip_reason))  # queued: it never will
                else:
                    self.node_status[i] = N_CANCELLED
                    if run is not None:
                        running.append(run)
        return running


class NodeRun(NodeContext):
    """One attempt of one node: the context its function receives, plus the engine's
    bookkeeping for it (the attributes below are not API).

    `started` is written by the node actor under the sequencing lock, `closed` on the
    execution by the supervisor under the same lock, so exactly one of "it started" and
    "it was skipped" is ever published. `value`, `error`, `duration_s` and `refused` are
    the node actor's answer, read by the supervisor after `NodeDone` arrives.
    """

    __slots__ = ("abandoned", "dispatched_at", "duration_s", "error", "execution", "index",
                 "node", "refused", "returned", "slot", "started", "started_at", "trial",
                 "value")

    def __init__(self, execution: Execution, index: int, attempt: int,
                 upstream: Mapping[str, Any], risk: Callable[..., dict[str, Any]],
                 dispatched_at: float, trial: bool) -> None:
        node = execution.workflow.nodes[index]
        # NodeContext's fields, set directly: this runs once per node per execution.
        self.inputs = execution.inputs
        self.upstream = upstream
        self.execution_id = execution.id
        self.workflow_id = execution.workflow.id
        self.node_id = node.id
        self.attempt = attempt
        self._cancelled = None
        self._cancel_requested = False
        self._risk = risk
        self._log = None
        self.execution = execution
        self.index = index
        self.node = node
        self.dispatched_at = dispatched_at
        self.trial = trial
        self.started = False
        self.started_at = 0.0
        #: Set by the node actor when the function came back, and `abandoned` by the
        #: supervisor on timeout: both under the pool's lock, so exactly one wins.
        self.returned = False
        self.abandoned = False
        self.slot: Any = None
        self.value: Any = None
        self.error: BaseException | None = None
        self.duration_s = 0.0
        self.refused: str | None = None
