"""One execution as a pure state machine: no locks, no actors, time passed in.

The supervisor (an actor) owns many `Execution`s and feeds them what happens: a node's
success, a node's failure, a refusal at the gate, an ending from outside (halt, cancel,
deadline). Each transition updates the DAG bookkeeping and returns a `Step`: the events
that say what happened, the nodes that are now ready, and the `Ending` when the execution
must close. Closing itself (`close`) returns the last events and the runs to cancel; the
supervisor calls it under the sequencing lock, so that a node is published either as
started or as skipped, never both, and nothing follows the terminal event.

Tests drive these transitions directly, without threads (tests/test_machine.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from actors.ending import Ending, ExecutionStatus, NodeStatus, SkipReason
from actors.errors import CircuitOpen, ExecutionTimeout
from actors.packing import event_snapshot
from actors.workflow import NodeContext

if TYPE_CHECKING:
    from actors.execution import ExecutionHandle
    from actors.workflow import Node, Workflow

Event = dict[str, Any]
_PENDING, _RUNNING, _COMPLETED = NodeStatus.PENDING, NodeStatus.RUNNING, NodeStatus.COMPLETED
_FAILED, _SKIPPED, _CANCELLED = NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED


@dataclass(slots=True)
class Step:
    """What a transition asks of its supervisor: publish `events`; then either close with
    `ending` (`failed_node` gets its dependents skipped as `upstream_failed`) or dispatch
    the `ready` nodes."""

    events: list[Event]
    ready: list[int] = field(default_factory=list)
    ending: Ending | None = None
    failed_node: int | None = None


class Execution:
    """A supervisor's record of one execution, touched only by its thread (and `closed`,
    read by the gate under the sequencing lock)."""

    __slots__ = (
        "__weakref__", "admitted_in", "attempts", "bot_id", "closed", "completed",
        "ending_on_start", "errors", "exempt_from_halt", "finished", "handle", "head", "id",
        "inputs", "node_status", "object_nodes", "outputs", "past_deadline", "priority",
        "remaining", "restarts", "retry_errors", "runs", "shown_inputs", "shown_outputs",
        "started_event", "started_mono", "status", "strategy_id", "user_objects", "workflow",
    )

    def __init__(self, *, execution_id: str, workflow: Workflow, inputs: Mapping[str, Any],
                 bot_id: str | None, strategy_id: str | None, priority: int,
                 handle: ExecutionHandle | None) -> None:
        n = len(workflow.nodes)
        self.id = execution_id
        self.workflow = workflow
        self.inputs = inputs
        #: `inputs` as events and the journal carry them (`packing.event_snapshot`: a copy
        #: of plain data), made here, in the submitter's thread.
        self.shown_inputs, self.user_objects = event_snapshot(inputs)
        self.bot_id = bot_id
        self.strategy_id = strategy_id
        self.priority = priority
        self.handle = handle
        self.status = ExecutionStatus.QUEUED
        #: The fields every workflow event of this execution starts with, in the order the
        #: protocol lists them. The sink fills in seq, timestamp, wseq and state: their keys
        #: are here already so that an event built from the head is not resized as it is
        #: built and sequenced (a quarter of the cost of making one).
        self.head: Event = {
            "v": 1, "seq": 0, "type": "", "timestamp": "", "execution_id": execution_id,
            "correlation_id": execution_id, "workflow_id": workflow.id, "bot_id": bot_id,
            "strategy_id": strategy_id, "wseq": 0, "state": "",
        }
        self.node_status: list[NodeStatus] = [_PENDING] * n
        self.attempts = [0] * n
        self.remaining = [len(d) for d in workflow.deps]
        self.outputs: dict[str, Any] = {}
        #: The outputs as events carry them (each node's `event_snapshot`): made only once
        #: an output's is another object than the output (`outputs` serves until then).
        self.shown_outputs: dict[str, Any] | None = None
        #: (`user_objects`: an input or an output is not plain data; set above and by
        #: `succeeded`.) The nodes whose output is not plain data, if any.
        self.object_nodes: list[str] | None = None
        self.errors: dict[str, tuple[str, str]] = {}
        #: node index -> the times of its failures that were re-run (the restart guard's).
        self.restarts: dict[int, list[float]] = {}
        #: node index -> (error, error_type) of its last failure, while a retry is owed:
        #: what it failed with if the retry is refused (None until a node is retried).
        self.retry_errors: dict[int, tuple[str, str]] | None = None
        self.runs: dict[int, NodeRun] = {}
        self.completed = 0
        self.finished = 0
        self.closed = False
        #: Closed by the workflow's timeout_s: its runs were cut by a venue's slowness, not
        #: by a halt, a cancel or another node's failure (what a breaker counts).
        self.past_deadline = False
        self.started_mono = 0.0
        self.started_event: Event = {}
        #: Set for a queued execution taken out to be ended (cancel, shutdown, halt): the
        #: supervisor starts it only to end it so, right after its execution_started.
        self.ending_on_start: Ending | None = None
        #: An on-halt hook: it runs in HALT (its actions count as reducing risk).
        self.exempt_from_halt = False
        #: How many halts had drained the queue when it was admitted (`Admission.halts`):
        #: one that starts after another halt was admitted before it, and ends halted.
        self.admitted_in = 0

    def holds_user_objects(self) -> bool:
        """Whether an input or an output is not plain data (`packing.event_snapshot` said
        so), so freeing it may run user code (actors/reaper.py)."""
        return self.user_objects

    def result_outputs(self) -> dict[str, Any]:
        """node_id -> output, for `result().results`: plain data as it was returned (the
        copy the events and the journal carry: a downstream node's change to the object
        does not reach it), any other output the node's own object."""
        shown = self.shown_outputs
        if shown is None:
            return self.outputs
        if self.object_nodes is None:
            return shown
        return {**shown, **{node_id: self.outputs[node_id] for node_id in self.object_nodes}}

    # -- transitions -----------------------------------------------------------------------

    def start(self, now: float) -> Event:
        """It is running from now; returns its `execution_started` (also kept)."""
        self.status = ExecutionStatus.RUNNING
        self.started_mono = now
        self.started_event = {**self.head, "type": "execution_started",
                              "node_count": len(self.node_status),
                              "inputs": self.shown_inputs,
                              "priority": self.priority}
        return self.started_event

    def dispatched(self, run: NodeRun) -> None:
        """`run` (this node's next attempt) was handed to a node actor."""
        self.attempts[run.index] = run.attempt
        self.runs[run.index] = run
        self.node_status[run.index] = _RUNNING

    def answered(self, run: NodeRun) -> bool:
        """A node actor answered for `run`; False if that run is no longer the node's
        current one (it was timed out and replaced, or the execution closed)."""
        if self.runs.get(run.index) is not run:
            return False
        del self.runs[run.index]
        return True

    def succeeded(self, i: int, value: Any, duration_s: float, attempt: int, now: float, *,
                  truth: bool = True, cached: bool = False, shown: Any = None,
                  user_object: bool = False) -> Step:
        """Node `i` returned `value` (for a condition, `truth` is its truth value); `shown`
        is its event form, made on the node's thread (None: `value` itself, as the event
        form of anything but None is never None); `user_object`: `value` is not plain
        data (`packing.event_snapshot`)."""
        wf = self.workflow
        node = wf.nodes[i]
        self.node_status[i] = _COMPLETED
        self.attempts[i] = attempt
        self.outputs[node.id] = value
        if shown is None:
            shown = value
        if user_object:
            self.user_objects = True
            if self.object_nodes is None:
                self.object_nodes = []
            self.object_nodes.append(node.id)
        shown_outputs = self.shown_outputs
        if shown is not value and shown_outputs is None:
            shown_outputs = self.shown_outputs = dict(self.outputs)
        if shown_outputs is not None:
            shown_outputs[node.id] = shown
        self.completed += 1
        self.finished += 1
        completed: Event = {
            **self.head, "type": "node_completed", "node_id": node.id,
            "duration_ms": round(duration_s * 1000.0, 3), "status": "success",
            "outputs": shown, "attempt": attempt}
        if cached:
            completed["cached"] = True
        step = Step([completed])
        if node.category == "condition" and not truth:
            for j in wf.closure.descendants(i):
                if self.node_status[j] is _PENDING:
                    step.events.append(self._skip(j, SkipReason.CONDITION_FALSE))
        else:
            remaining, status = self.remaining, self.node_status
            for j in wf.dependents[i]:
                remaining[j] -= 1
                if remaining[j] == 0 and status[j] is _PENDING:
                    step.ready.append(j)
        return self._advance(step, now)

    def failed(self, i: int, error: str, error_type: str, duration_s: float, attempt: int,
               retry_delay_s: float | None) -> Step:
        """Node `i` failed; `retry_delay_s` is the restart guard's answer (None: final)."""
        node = self.workflow.nodes[i]
        final = retry_delay_s is None
        failed: Event = {
            **self.head, "type": "node_failed", "node_id": node.id,
            "duration_ms": round(duration_s * 1000.0, 3), "error": error,
            "error_type": error_type, "attempt": attempt, "final": final}
        if retry_delay_s is None:
            self.node_status[i] = _FAILED
            self.finished += 1
            self.errors[node.id] = (error, error_type)
            return Step([failed], ending=Ending.failed(error, error_type), failed_node=i)
        self.node_status[i] = _PENDING
        if self.retry_errors is None:
            self.retry_errors = {}
        self.retry_errors[i] = (error, error_type)
        return Step([failed, {
            **self.head, "type": "node_retrying", "node_id": node.id, "attempt": attempt + 1,
            "delay_ms": round(retry_delay_s * 1000.0, 3), "error_type": error_type}])

    def failed_circuit_open(self, i: int, error: str, error_type: str, duration_s: float,
                            attempt: int) -> Step:
        """Node `i` failed and would run again, but its breaker is open until past the
        retry (this failure may have opened it): the retry is asked for at once
        (`node_retrying`, `delay_ms` 0, so every non-final failure still has one) and
        refused as any run is while the breaker is open: skipped, `circuit_open`."""
        node_id = self.workflow.nodes[i].id
        step = self.circuit_open(i)
        step.events[:0] = [
            {**self.head, "type": "node_failed", "node_id": node_id,
             "duration_ms": round(duration_s * 1000.0, 3), "error": error,
             "error_type": error_type, "attempt": attempt, "final": False},
            {**self.head, "type": "node_retrying", "node_id": node_id, "attempt": attempt + 1,
             "delay_ms": 0.0, "error_type": error_type}]
        return step

    def circuit_open(self, i: int) -> Step:
        """Node `i`'s breaker refused it: skipped, and the execution fails."""
        node = self.workflow.nodes[i]
        self.node_status[i] = _SKIPPED
        self.finished += 1
        error = f"node {node.id!r}: circuit {node.breaker!r} is open"
        self.errors[node.id] = (error, CircuitOpen.__name__)
        skipped = {**self.head, "type": "node_skipped", "node_id": node.id,
                   "reason": SkipReason.CIRCUIT_OPEN.value}
        return Step([skipped], ending=Ending.failed(error, CircuitOpen.__name__), failed_node=i)

    def denied(self, i: int, reason: str, now: float) -> Step:
        """The gate did not let node `i` start (it never ran): the attempt it was handed
        out as is not counted."""
        self.node_status[i] = _PENDING
        self.attempts[i] -= 1
        if reason == SkipReason.HALTED:
            return Step([], ending=Ending.halted("the engine is in HALT"))
        if reason != SkipReason.REDUCE_ONLY:
            node_id = self.workflow.nodes[i].id
            return Step([], ending=Ending(ExecutionStatus.FAILED,
                                          f"node {node_id!r} could not start: {reason}",
                                          "InternalError"))
        earlier = self.retry_errors.pop(i, None) if self.retry_errors else None
        if earlier is not None:
            # A retry refused: the failure before it was the node's last, so it is final
            # (fail fast), never a skip that lets the execution complete.
            step = Step([self._skip(i, SkipReason.REDUCE_ONLY)], ending=Ending.failed(*earlier),
                        failed_node=i)
            self.node_status[i] = _FAILED
            self.errors[self.workflow.nodes[i].id] = earlier
            return step
        # reduce_only: this action and what depends on it are skipped; the rest goes on.
        step = Step([self._skip(i, SkipReason.REDUCE_ONLY)])
        for j in self.workflow.closure.descendants(i):
            if self.node_status[j] is _PENDING:
                step.events.append(self._skip(j, SkipReason.REDUCE_ONLY))
        return self._advance(step, now)

    def close(self, ending: Ending, failed_node: int | None, now: float,
              events: list[Event], *, skip_events: bool = True) -> list[NodeRun]:
        """End the execution: append the skips and the terminal event to `events` and
        return the runs still going, for the caller to cancel. Call it under the
        sequencing lock: a run's `started` flag is written under it.

        `skip_events=False` for one that never left the queue: its nodes are marked
        skipped, but its `execution_started` comes right before its terminal event."""
        self.closed = True
        self.status = ending.status
        self.past_deadline = ending.error_type == ExecutionTimeout.__name__
        downstream = (frozenset(self.workflow.closure.descendants(failed_node))
                      if failed_node is not None else frozenset())
        running: list[NodeRun] = []
        for i, status in enumerate(self.node_status):
            if status is _PENDING:
                reason = SkipReason.UPSTREAM_FAILED if i in downstream else ending.skip_reason
                skipped = self._skip(i, reason)
                if skip_events:
                    events.append(skipped)
            elif status is _RUNNING:
                run = self.runs.get(i)
                if run is not None and not run.started:
                    # Queued in the pool: it never will start, so it made no attempt.
                    self.attempts[i] = run.attempt - 1
                    events.append(self._skip(i, ending.skip_reason))
                else:
                    self.node_status[i] = _CANCELLED
                    if run is not None:
                        running.append(run)
        terminal: Event = {**self.head, "type": ending.terminal_event,
                           "duration_ms": self.duration_ms(now), "status": ending.status.value,
                           "results": dict(self.outputs if self.shown_outputs is None
                                           else self.shown_outputs),
                           "nodes": self.node_summary()}
        # Every terminal event carries `error_type` (docs/protocol.md): None when it completed.
        terminal["error_type"] = ending.error_type
        if ending.error_type is not None:
            terminal["error"] = ending.error
        events.append(terminal)
        return running

    # -- views -----------------------------------------------------------------------------

    def duration_ms(self, now: float) -> float:
        return round((now - self.started_mono) * 1000.0, 3)

    def progress(self, now: float) -> Event:
        total = len(self.node_status)
        done = self.finished
        elapsed_ms = (now - self.started_mono) * 1000.0
        eta = round(elapsed_ms / done * (total - done), 3) if done else None
        return {**self.head, "type": "progress", "nodes_completed": self.completed,
                "nodes_total": total, "nodes_in_progress": len(self.runs), "eta_ms": eta}

    def node_summary(self) -> dict[str, dict[str, Any]]:
        """node_id -> {"status", "attempts"} plus "error"/"error_type" for failed nodes
        (outputs are in `results`): what the terminal event and the journal keep."""
        summary: dict[str, dict[str, Any]] = {}
        errors = self.errors
        for i, node in enumerate(self.workflow.nodes):
            entry: dict[str, Any] = {"status": self.node_status[i].value,
                                     "attempts": self.attempts[i]}
            if node.id in errors:
                entry["error"], entry["error_type"] = errors[node.id]
            summary[node.id] = entry
        return summary

    # -- internals -------------------------------------------------------------------------

    def _skip(self, i: int, reason: SkipReason) -> Event:
        self.node_status[i] = _SKIPPED
        self.finished += 1
        return {**self.head, "type": "node_skipped", "node_id": self.workflow.nodes[i].id,
                "reason": reason.value}

    def _advance(self, step: Step, now: float) -> Step:
        if self.finished == len(self.node_status):
            # The terminal event follows in the same batch and says all a progress would.
            step.ending = Ending.completed()
            step.ready = []
        else:
            step.events.append(self.progress(now))
        return step


class NodeRun(NodeContext):
    """One attempt of one node: the context its function receives, plus the engine's
    bookkeeping for it (the attributes below are not API).

    `started` is written by the node actor under the sequencing lock, `closed` on the
    execution by the supervisor under the same lock, so exactly one of "it started" and
    "it was skipped" is ever published. `value`, `truth`, `error`, `error_text`,
    `duration_s` and `denied` are the node actor's answer, read by the supervisor after
    `NodeDone` arrives.
    """

    __slots__ = ("__weakref__", "abandoned", "abandoned_why", "cache_copy", "denied",
                 "duration_s", "error", "error_text", "execution", "index", "node", "returned",
                 "shown", "slot", "started", "started_at", "trial", "truth", "user_object",
                 "value")

    def __init__(self, execution: Execution, index: int, attempt: int,
                 upstream: Mapping[str, Any], risk: Callable[..., dict[str, Any]]) -> None:
        node: Node = execution.workflow.nodes[index]
        # NodeContext's fields, set directly: this runs once per node per execution.
        # Its own top-level dicts (`upstream` is made per run by the caller): a node that
        # writes to them changes nothing another node, the events or the journal see.
        self.inputs = dict(execution.inputs)
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
        #: The breaker let this run through as its one half-open trial.
        self.trial = False
        self.started = False
        self.started_at = 0.0
        #: Set by the node actor when the function came back, and `abandoned` by the
        #: supervisor on timeout: both under the pool's lock, so exactly one wins.
        self.returned = False
        self.abandoned = False
        #: Why it was abandoned (what a late action's journal record says).
        self.abandoned_why = "timed out"
        self.slot: Any = None
        self.value: Any = None
        #: `value` as events carry it (`packing.event_snapshot`), made on the node's
        #: thread, and whether `value` is not plain data.
        self.shown: Any = None
        self.user_object = False
        #: For a cached provider's cache: a deep copy of `value` and its event form (made
        #: on the node's thread), or None.
        self.cache_copy: tuple[Any, Any] | None = None
        self.truth = True
        self.error: BaseException | None = None
        self.error_text = ""
        self.duration_s = 0.0
        #: Why the gate did not let it start (halted, reduce_only, closed), if it did not.
        self.denied: str | None = None
