"""A Hypothesis state machine over the pure execution state machine (actors/machine.py).

Each example starts executions of small random DAGs, one after another, and lets
Hypothesis interleave what can happen to each, fed to the machine the way `SupervisorActor`
feeds it (no threads, no actors, time passed in): a dispatched run starts or is refused by
the gate, a started run succeeds (a condition true or false), fails (retryable or not) or
overruns its timeout, a retry timer fires, the execution is cancelled, halted or overruns
its deadline (again, once it has ended), a cancelled run answers late. After every step the
promises of CONTRACT sections 5 and 7 are checked against the machine's state and its
events, which go through a real `EventSink` and `validate_event`. The restart window is
longer than any example, so a node runs at most `max_restarts + 1` times."""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.clock import ManualClock
from actors.config import ResilienceConfig
from actors.ending import TERMINAL_EVENT, Ending, ExecutionStatus, NodeStatus
from actors.errors import NodeTimeout
from actors.events import EventSink, validate_event
from actors.guards import RestartGuard
from actors.machine import Event, Execution, NodeRun, Step
from actors.workflow import Node, Workflow
from tests.execution_stream import check_stream

CATEGORIES = ("provider", "condition", "transform", "action")
_COMPLETED, _FAILED = NodeStatus.COMPLETED, NodeStatus.FAILED
_SKIPPED, _CANCELLED = NodeStatus.SKIPPED, NodeStatus.CANCELLED
SETTLED = frozenset({_COMPLETED, _FAILED, _SKIPPED, _CANCELLED})
#: Skips that take everything below the node with it, while the execution goes on.
SPREADING_SKIPS = frozenset({"condition_false", "upstream_failed", "reduce_only"})
RESILIENCE = ResilienceConfig(timeout_s=1.0, max_restarts=2, restart_within_s=3600.0,
                              backoff_min_s=0.01, backoff_max_s=0.05)
#: What ends an execution from outside (EndExecutions, the deadline timer).
OUTSIDE_ENDINGS = {
    "cancelled": Ending.cancelled("by the test"),
    "halted": Ending.halted("by the test"),
}
ENDINGS = st.sampled_from(sorted(OUTSIDE_ENDINGS))
ENDINGS_WITH_DEADLINE = st.sampled_from([*sorted(OUTSIDE_ENDINGS), "deadline"])


def _noop(ctx: Any) -> None:
    return None


def _no_risk(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {}


class NodeSpec(NamedTuple):
    """One node to build: what a failing example prints (a Workflow's repr shows ids only)."""

    id: str
    category: str
    depends_on: tuple[str, ...]
    max_restarts: int
    idempotent: bool

    def build(self) -> Node:
        return Node(self.id, _noop, category=self.category, depends_on=self.depends_on,
                    max_restarts=self.max_restarts, idempotent=self.idempotent)


@st.composite
def node_specs(draw: st.DrawFn) -> list[NodeSpec]:
    """1-7 nodes; node k depends only on nodes made before it (a DAG), listed shuffled."""
    specs = []
    for k in range(draw(st.integers(1, 7))):
        deps = draw(st.sets(st.integers(0, k - 1), max_size=3)) if k else set()
        category = draw(st.sampled_from(CATEGORIES))
        idempotent = category == "action" and draw(st.booleans())
        at_most_once = category == "action" and not idempotent
        specs.append(NodeSpec(f"n{k}", category, tuple(f"n{d}" for d in sorted(deps)),
                              0 if at_most_once else draw(st.integers(0, 2)), idempotent))
    return draw(st.permutations(specs))


class Start(NamedTuple):
    """What starting an execution takes (see `ExecutionMachine.end_after` for the last two)."""

    nodes: list[NodeSpec]
    timeout_s: float | None
    #: Ended before it runs: while queued, or started in HALT.
    on_start: str | None
    end_after: int
    failures: int


STARTS = st.builds(Start, nodes=node_specs(), timeout_s=st.sampled_from([120.0, None]),
                   on_start=st.sampled_from([None] * 10 + ["cancelled", "halted"]),
                   end_after=st.integers(0, 60), failures=st.integers(0, 4))


class ExecutionMachine(RuleBasedStateMachine):
    """Executions, one at a time, and the supervisor's loop around them written out small."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.sink = EventSink(self.clock)
        self.restart = RestartGuard(RESILIENCE)
        self.exe: Execution | None = None
        self.executions = 0
        #: Runs cancelled by a close, of this execution or earlier ones: they may answer.
        self.cancelled: list[NodeRun] = []
        self._new_execution_state()

    def _new_execution_state(self) -> None:
        #: This execution's events, as published.
        self.published: list[Event] = []
        #: Handed to a node actor, not started yet (in its mailbox).
        self.waiting: list[NodeRun] = []
        #: Started, not answered yet.
        self.running: list[NodeRun] = []
        #: Retry timers: (node index, attempt that failed, due).
        self.retries: list[tuple[int, int, float]] = []
        #: node id -> the output its successful run returned.
        self.outputs: dict[str, Any] = {}
        self.ending: Ending | None = None
        self.failed_node: int | None = None
        # Left alone, Hypothesis picks among the enabled rules evenly: the ending from
        # outside (always enabled) and failures would cut nearly every execution short.
        #: The ending from outside is enabled once this many events are out.
        self.end_after = 0
        #: How many more runs may fail, overrun or be refused by the gate.
        self.failures_left = 0

    @property
    def execution(self) -> Execution:
        assert self.exe is not None
        return self.exe

    # -- the supervisor, small ---------------------------------------------------------------

    def _emit(self, events: list[Event]) -> None:
        self.sink.emit(events)
        for event in events:
            assert validate_event(event, strict=True) == [], event
        self.published.extend(events)

    def _dispatch(self, i: int) -> None:
        exe = self.execution
        assert not exe.closed, "a node dispatched after the execution closed"
        waiting_on = [d for d in exe.workflow.deps[i] if exe.node_status[d] is not _COMPLETED]
        assert not waiting_on, f"node {i} dispatched before {waiting_on} completed"
        outputs = exe.outputs
        run = NodeRun(exe, i, exe.attempts[i] + 1,
                      {a: outputs[a] for a in exe.workflow.closure.ancestor_ids(i)}, _no_risk)
        exe.dispatched(run)
        self.waiting.append(run)

    def _apply(self, step: Step) -> None:
        if step.ending is not None:
            self._close(step.ending, step.events, step.failed_node)
            return
        if step.events:
            self._emit(step.events)
        for j in step.ready:
            if self.execution.closed:
                break
            self._dispatch(j)

    def _close(self, ending: Ending, events: list[Event] | None = None,
               failed_node: int | None = None) -> None:
        exe = self.execution
        if exe.closed:
            return
        events = events if events is not None else []
        runs = exe.close(ending, failed_node, self.clock.monotonic(), events)
        for run in runs:
            run.cancel()
        self._emit(events)
        self.ending, self.failed_node = ending, failed_node
        assert {id(r) for r in runs} == {id(r) for r in self.running}, "a started run not cancelled"
        self.cancelled.extend(runs)
        self.running = []

    def _failure(self, run: NodeRun, error: BaseException, duration_s: float) -> Step:
        exe, i, now = self.execution, run.index, self.clock.monotonic()
        delay = self.restart.retry_delay_s(run.node, error, exe.restarts.setdefault(i, []), now)
        if delay is not None:
            self.retries.append((i, run.attempt, now + delay))
        return exe.failed(i, str(error), type(error).__name__, duration_s, run.attempt, delay)

    def _take(self, runs: list[NodeRun], data: st.DataObject) -> NodeRun:
        return runs.pop(data.draw(st.integers(0, len(runs) - 1), label="run"))

    # -- what can happen ---------------------------------------------------------------------

    def _begin(self, start: Start) -> None:
        wf = Workflow("sm", [spec.build() for spec in start.nodes], timeout_s=start.timeout_s)
        self._new_execution_state()
        self.end_after, self.failures_left = start.end_after, start.failures
        self.executions += 1
        self.exe = exe = Execution(execution_id=f"exec_sm_{self.executions:08x}", workflow=wf,
                                   inputs={"x": 1}, bot_id="bot", strategy_id=None,
                                   priority=0, handle=None)
        started = exe.start(self.clock.monotonic())
        if start.on_start is not None:
            self._close(OUTSIDE_ENDINGS[start.on_start], [started])
            return
        self._emit([started])
        for i in wf.roots:
            if exe.closed:
                break
            self._dispatch(i)

    @precondition(lambda self: self.exe is None or self.exe.closed)
    @rule(start=STARTS)
    def an_execution_starts(self, start: Start) -> None:
        """The first, and another once the last one ended (whose cancelled runs may still
        answer). A rule, not an initialize rule: so the shrinker may drop the executions
        before the one that fails."""
        self._begin(start)

    @precondition(lambda self: self.waiting)
    @rule(data=st.data())
    def a_node_actor_takes_a_run(self, data: st.DataObject) -> None:
        """The gate admits it (node_started), or says "closed" if the execution ended."""
        exe, run = self.execution, self._take(self.waiting, data)
        if exe.closed:
            run.denied = "closed"
            exe.answered(run)  # the supervisor hears of it and publishes nothing
            return
        run.started, run.started_at = True, self.clock.monotonic()
        node = run.node
        self._emit([{**exe.head, "type": "node_started", "node_id": node.id,
                     "node_name": node.name, "node_category": node.category,
                     "attempt": run.attempt}])
        self.running.append(run)

    @precondition(lambda self: self.waiting and self.failures_left
                  and not self.execution.closed)
    @rule(data=st.data(), reduce_only=st.booleans())
    def the_gate_refuses_a_run(self, data: st.DataObject, reduce_only: bool) -> None:
        exe, run = self.execution, self._take(self.waiting, data)
        self.failures_left -= 1
        # The gate holds back only actions in REDUCE_ONLY; anything in HALT.
        run.denied = "reduce_only" if reduce_only and run.node.category == "action" else "halted"
        assert exe.answered(run)
        self._apply(exe.denied(run.index, run.denied, self.clock.monotonic()))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), truth=st.booleans())
    def a_run_succeeds(self, data: st.DataObject, truth: bool) -> None:
        exe, run = self.execution, self._take(self.running, data)
        assert exe.answered(run)
        self.clock.advance(0.01)
        node = run.node
        value: Any = truth if node.category == "condition" else {"node": node.id,
                                                                 "attempt": run.attempt}
        self.outputs[node.id] = value
        self._apply(exe.succeeded(run.index, value, 0.01, run.attempt, self.clock.monotonic(),
                                  truth=truth))

    @precondition(lambda self: self.running and self.failures_left)
    @rule(data=st.data(), error=st.sampled_from([ConnectionError("reset"), ValueError("bad")]))
    def a_run_fails(self, data: st.DataObject, error: Exception) -> None:
        """ConnectionError restarts while the node's max_restarts allows; ValueError never."""
        exe, run = self.execution, self._take(self.running, data)
        self.failures_left -= 1
        assert exe.answered(run)
        self.clock.advance(0.01)
        self._apply(self._failure(run, error, 0.01))

    @precondition(lambda self: self.running and self.failures_left)
    @rule(data=st.data())
    def a_run_overruns_its_timeout(self, data: st.DataObject) -> None:
        exe, run = self.execution, self._take(self.running, data)
        self.failures_left -= 1
        timeout_s = self.restart.timeout_s(run.node)
        self.clock.advance(timeout_s)
        run.abandoned = True
        assert exe.answered(run)
        run.cancel()
        self._apply(self._failure(run, NodeTimeout(f"{run.node.id} overran"), timeout_s))

    @precondition(lambda self: self.retries)
    @rule(data=st.data())
    def a_retry_timer_fires(self, data: st.DataObject) -> None:
        exe = self.execution
        i, attempt, due = self.retries.pop(data.draw(st.integers(0, len(self.retries) - 1)))
        self.clock.advance(max(0.0, due - self.clock.monotonic()))
        if not exe.closed and exe.attempts[i] == attempt:
            self._dispatch(i)

    @precondition(lambda self: self.exe is not None and not self.exe.closed
                  and len(self.published) >= self.end_after)
    @rule(data=st.data())
    def it_is_ended_from_outside(self, data: st.DataObject) -> None:
        """Cancelled, halted, or the workflow's deadline (when it has one) passed."""
        exe = self.execution
        kinds = ENDINGS_WITH_DEADLINE if exe.workflow.timeout_s else ENDINGS
        kind = data.draw(kinds, label="ending")
        self.clock.advance(0.01)
        self._close(Ending.timed_out(exe.workflow.timeout_s) if kind == "deadline"
                    else OUTSIDE_ENDINGS[kind])

    @precondition(lambda self: self.exe is not None and self.exe.closed)
    @rule(kind=ENDINGS)
    def it_is_ended_again(self, kind: str) -> None:
        """A halt or cancel for an execution that ended: the supervisor ignores it."""
        self._close(OUTSIDE_ENDINGS[kind])

    @precondition(lambda self: self.cancelled)
    @rule(data=st.data())
    def a_cancelled_run_answers_late(self, data: st.DataObject) -> None:
        run = self._take(self.cancelled, data)
        exe = run.execution
        before = (list(exe.node_status), dict(exe.outputs), self.sink.last_seq)
        exe.answered(run)  # the supervisor sees exe.closed and publishes nothing
        assert exe.closed
        assert (list(exe.node_status), dict(exe.outputs), self.sink.last_seq) == before

    # -- what always holds -------------------------------------------------------------------

    @invariant()
    def nodes_ran_only_after_their_dependencies(self) -> None:
        if self.exe is None:
            return
        exe = self.exe
        for i, deps in enumerate(exe.workflow.deps):
            if exe.attempts[i]:
                assert all(exe.node_status[d] is _COMPLETED for d in deps), i

    @invariant()
    def attempts_stay_within_max_restarts(self) -> None:
        if self.exe is None:
            return
        for node, attempts in zip(self.exe.workflow.nodes, self.exe.attempts, strict=True):
            assert attempts <= self.restart.policy(node).max_restarts + 1, node.id

    @invariant()
    def skips_take_everything_below(self) -> None:
        if self.exe is None:
            return
        exe = self.exe
        spreading = {e["node_id"] for e in self.published
                     if e["type"] == "node_skipped" and e["reason"] in SPREADING_SKIPS}
        for i, node in enumerate(exe.workflow.nodes):
            # Once closed, nothing below a node that did not complete may be left or run.
            if node.id in spreading or (exe.closed and exe.node_status[i] is not _COMPLETED):
                below = [exe.workflow.nodes[j].id for j in exe.workflow.closure.descendants(i)
                         if exe.node_status[j] is not _SKIPPED]
                assert not below, f"{node.id} is {exe.node_status[i]}; not skipped: {below}"

    @invariant()
    def it_ends_exactly_once_when_it_must(self) -> None:
        if self.exe is None:
            return
        exe = self.exe
        terminals = [e for e in self.published if e["type"] in TERMINAL_EVENT.values()]
        settled = all(s in SETTLED for s in exe.node_status)
        counted = sum(s in (_COMPLETED, _FAILED, _SKIPPED) for s in exe.node_status)
        assert exe.finished == counted
        if not exe.closed:
            assert terminals == [] and exe.status is ExecutionStatus.RUNNING
            assert not settled, "every node settled but no ending"
            assert _FAILED not in exe.node_status and _CANCELLED not in exe.node_status
            assert self.waiting or self.running or self.retries, "stuck: nothing can happen"
            return
        assert settled and len(terminals) == 1 and self.published[-1] is terminals[0]
        assert self.ending is not None
        terminal = terminals[0]
        assert terminal["type"] == self.ending.terminal_event
        assert terminal["status"] == exe.status.value == self.ending.status.value
        assert terminal.get("error_type") == self.ending.error_type
        completed = {n.id for n, s in zip(exe.workflow.nodes, exe.node_status, strict=True)
                     if s is _COMPLETED}
        assert terminal["results"] == {k: self.outputs[k] for k in completed}
        assert terminal["nodes"] == {n.id: {**terminal["nodes"][n.id], "status": s.value,
                                            "attempts": a}
                                     for n, s, a in zip(exe.workflow.nodes, exe.node_status,
                                                        exe.attempts, strict=True)}
        if exe.status is ExecutionStatus.COMPLETED:
            assert not {_FAILED, _CANCELLED} & set(exe.node_status)

    @invariant()
    def the_event_stream_is_well_formed(self) -> None:
        if self.exe is not None:
            check_stream(self.exe, self.published, self.failed_node)


# ~7 s when it passes. When it fails, shrinking to a small example may take minutes (the
# shrinker's own cap is 300 s): the suite's 60 s per test would cut it short.
ExecutionMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50,
                                              deadline=None)
TestExecutionMachine = pytest.mark.timeout(400)(ExecutionMachine.TestCase)
