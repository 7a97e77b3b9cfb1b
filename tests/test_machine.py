"""The execution state machine and the guards, driven directly: no threads, no actors."""

from __future__ import annotations

from typing import Any

from actors.breaker import BreakerRegistry, BreakerState
from actors.cache import ProviderCache
from actors.clock import ManualClock
from actors.config import ResilienceConfig
from actors.ending import Ending, ExecutionStatus, NodeStatus
from actors.events import EventSink
from actors.guards import BreakerGuard, CacheGuard, RestartGuard, private_copy
from actors.machine import Execution, NodeRun
from actors.workflow import Node, Workflow


def _noop(ctx: Any) -> None:
    return None


def diamond() -> Workflow:
    """a -> (b, c) -> d, plus a lone e."""
    return Workflow("diamond", nodes=[
        Node("a", _noop, category="provider"),
        Node("b", _noop, depends_on=["a"]),
        Node("c", _noop, category="condition", depends_on=["a"]),
        Node("d", _noop, category="action", depends_on=["b", "c"]),
        Node("e", _noop),
    ])


def new_execution(wf: Workflow | None = None) -> Execution:
    exe = Execution(execution_id="exec_diamond_00000001", workflow=wf or diamond(),
                    inputs={"x": 1}, bot_id="bot", strategy_id=None, priority=0, handle=None)
    exe.start(now=10.0)
    return exe


def run_of(exe: Execution, node_id: str) -> NodeRun:
    i = exe.workflow.index[node_id]
    run = NodeRun(exe, i, exe.attempts[i] + 1, {}, lambda *a, **k: {})
    exe.dispatched(run)
    return run


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def test_start_is_running_with_the_started_event() -> None:
    exe = new_execution()
    assert exe.status is ExecutionStatus.RUNNING
    assert exe.started_event["type"] == "execution_started"
    assert exe.started_event["node_count"] == 5
    assert exe.started_event["inputs"] == {"x": 1}


def test_success_readies_dependents_only_when_all_their_dependencies_are_done() -> None:
    exe = new_execution()
    a = run_of(exe, "a")
    step = exe.succeeded(a.index, {"p": 1}, 0.001, 1, now=10.1)
    assert types(step.events) == ["node_completed", "progress"]
    assert step.ready == [1, 2]  # b and c
    assert step.ending is None
    run_of(exe, "b")
    step = exe.succeeded(1, "b-out", 0.001, 1, now=10.2)
    assert step.ready == []  # d still waits for c
    run_of(exe, "c")
    step = exe.succeeded(2, True, 0.001, 1, now=10.3, truth=True)
    assert step.ready == [3]


def test_a_false_condition_skips_everything_below_it_and_completes() -> None:
    wf = Workflow("cond", nodes=[
        Node("c", _noop, category="condition"),
        Node("x", _noop, depends_on=["c"]),
        Node("y", _noop, depends_on=["x"]),
    ])
    exe = new_execution(wf)
    run_of(exe, "c")
    step = exe.succeeded(0, 0, 0.0, 1, now=10.0, truth=False)
    assert types(step.events) == ["node_completed", "node_skipped", "node_skipped"]
    assert [e["reason"] for e in step.events[1:]] == ["condition_false"] * 2
    assert step.ending == Ending.completed()


def test_a_retryable_failure_sets_the_node_back_to_pending_with_a_retry_event() -> None:
    exe = new_execution()
    a = run_of(exe, "a")
    step = exe.failed(a.index, "reset", "ConnectionError", 0.002, 1, retry_delay_s=0.5)
    assert types(step.events) == ["node_failed", "node_retrying"]
    assert step.events[0]["final"] is False
    assert step.events[1]["attempt"] == 2 and step.events[1]["delay_ms"] == 500.0
    assert step.ending is None
    assert exe.node_status[a.index] is NodeStatus.PENDING


def test_a_final_failure_ends_failed_and_close_skips_below_it_as_upstream_failed() -> None:
    exe = new_execution()
    a = run_of(exe, "a")
    e = run_of(exe, "e")
    e.started = True  # e is running in a node actor
    step = exe.failed(a.index, "boom", "ValueError", 0.002, 1, retry_delay_s=None)
    assert step.ending == Ending.failed("boom", "ValueError")
    assert step.failed_node == a.index
    events = list(step.events)
    running = exe.close(step.ending, step.failed_node, 10.5, events)
    assert running == [e]
    skipped = {ev["node_id"]: ev["reason"] for ev in events if ev["type"] == "node_skipped"}
    assert skipped == {"b": "upstream_failed", "c": "upstream_failed", "d": "upstream_failed"}
    terminal = events[-1]
    assert terminal["type"] == "execution_failed"
    assert terminal["error_type"] == "ValueError" and terminal["error"] == "boom"
    assert terminal["duration_ms"] == 500.0
    assert terminal["nodes"]["a"] == {"status": "failed", "attempts": 1, "error": "boom",
                                      "error_type": "ValueError"}
    assert terminal["nodes"]["e"]["status"] == "cancelled"
    assert exe.closed and exe.status is ExecutionStatus.FAILED


def test_close_skips_a_run_that_never_started_instead_of_cancelling_it() -> None:
    exe = new_execution()
    run_of(exe, "a")  # handed out, still in the mailbox: started is False
    events: list[dict[str, Any]] = []
    running = exe.close(Ending.halted("manual"), None, 10.0, events)
    assert running == []
    skips = [ev for ev in events if ev["type"] == "node_skipped"]
    assert {ev["node_id"] for ev in skips} == {"a", "b", "c", "d", "e"}
    assert {ev["reason"] for ev in skips} == {"halted"}
    assert events[-1]["type"] == "execution_halted"


def test_the_terminal_results_are_a_copy_of_the_outputs() -> None:
    exe = new_execution(Workflow("one", nodes=[Node("a", _noop)]))
    run_of(exe, "a")
    step = exe.succeeded(0, {"p": 1}, 0.0, 1, now=10.0)
    events = list(step.events)
    exe.close(step.ending or Ending.completed(), None, 10.0, events)
    events[-1]["results"]["a"] = "changed"
    assert exe.outputs == {"a": {"p": 1}}


def test_denied_reduce_only_skips_the_action_and_what_depends_on_it() -> None:
    exe = new_execution()
    for node_id in ("a", "b", "c"):
        run_of(exe, node_id)
        exe.succeeded(exe.workflow.index[node_id], 1, 0.0, 1, now=10.0)
    d = run_of(exe, "d")
    step = exe.denied(d.index, "reduce_only", now=10.0)
    assert types(step.events) == ["node_skipped", "progress"]
    assert step.events[0]["reason"] == "reduce_only"
    assert step.ending is None  # e still pending


def test_a_retry_denied_by_reduce_only_makes_the_failure_before_it_final() -> None:
    """The action failed and its retry was refused: the execution fails with that error
    (fail fast), never completes as though the action had only been skipped."""
    exe = new_execution()
    for node_id in ("a", "b", "c"):
        run_of(exe, node_id)
        exe.succeeded(exe.workflow.index[node_id], 1, 0.0, 1, now=10.0)
    d = run_of(exe, "d")
    exe.failed(d.index, "reset", "ConnectionError", 0.002, 1, retry_delay_s=0.5)
    retry = run_of(exe, "d")
    assert retry.attempt == 2
    step = exe.denied(retry.index, "reduce_only", now=10.0)
    assert step.ending == Ending.failed("reset", "ConnectionError")
    assert step.failed_node == d.index
    assert types(step.events) == ["node_skipped"]
    assert step.events[0]["reason"] == "reduce_only"
    events = list(step.events)
    exe.close(step.ending, step.failed_node, 10.0, events)
    assert events[-1]["type"] == "execution_failed"
    assert events[-1]["nodes"]["d"] == {"status": "failed", "attempts": 1, "error": "reset",
                                        "error_type": "ConnectionError"}


def test_denied_halted_ends_halted() -> None:
    exe = new_execution()
    a = run_of(exe, "a")
    step = exe.denied(a.index, "halted", now=10.0)
    assert step.ending is not None and step.ending.status is ExecutionStatus.HALTED
    assert step.ending.error_type == "Halted"


def test_circuit_open_skips_the_node_and_fails_with_circuit_open() -> None:
    wf = Workflow("cb", nodes=[Node("a", _noop, breaker="x"), Node("b", _noop, depends_on=["a"])])
    exe = new_execution(wf)
    step = exe.circuit_open(0)
    assert step.events[0]["reason"] == "circuit_open"
    assert step.ending is not None and step.ending.error_type == "CircuitOpen"
    assert step.failed_node == 0


# -- guards --------------------------------------------------------------------------------

def test_breaker_guard_refuses_while_open_and_releases_an_unstarted_trial() -> None:
    clock = ManualClock()
    registry = BreakerRegistry(threshold=1, reset_timeout_s=5.0, clock=clock,
                               sink=EventSink(clock))
    guard = BreakerGuard(registry)
    wf = Workflow("cb", nodes=[Node("a", _noop, breaker="x")])
    first = run_of(new_execution(wf), "a")
    assert guard.before_dispatch(first) is None
    guard.after_run(first, ConnectionError("down"))
    assert registry.get("x").state is BreakerState.OPEN
    assert guard.before_dispatch(run_of(new_execution(wf), "a")) is not None
    clock.advance(5.0)
    trial = run_of(new_execution(wf), "a")
    assert guard.before_dispatch(trial) is None and trial.trial
    trial.denied = "halted"  # the gate refused it: it never ran
    guard.after_run(trial, None)
    again = run_of(new_execution(wf), "a")
    assert guard.before_dispatch(again) is None and again.trial


def test_cache_guard_keys_inputs_with_mixed_key_types_and_skips_unrepresentable_ones() -> None:
    clock = ManualClock()
    guard = CacheGuard(ProviderCache(clock))
    wf = Workflow("c", nodes=[Node("p", _noop, category="provider", cache_ttl_s=5.0)])

    def make(inputs: dict[Any, Any]) -> NodeRun:
        exe = Execution(execution_id="exec_c_00000001", workflow=wf, inputs=inputs,
                        bot_id=None, strategy_id=None, priority=0, handle=None)
        return run_of(exe, "p")

    stored = make({1: "a", "b": 2})
    stored.value = {"price": 1.0}
    guard.after_run(stored, None)  # (no copy made on the node's thread: not kept)
    assert guard.before_dispatch(make({"b": 2, 1: "a"})) is None
    copied = private_copy(stored.value)
    assert copied is not None
    stored.cache_copy = (copied[0], copied[0])
    guard.after_run(stored, None)
    verdict = guard.before_dispatch(make({"b": 2, 1: "a"}))
    assert verdict is not None and verdict.value == {"price": 1.0}
    # Each hit is its own copy: a caller changing one changes no later hit, nor the
    # output the first run gave its caller.
    verdict.value["price"] = -1.0
    stored.value["price"] = -2.0
    again = guard.before_dispatch(make({1: "a", "b": 2}))
    assert again is not None and again.value == {"price": 1.0}

    class NoRepr:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    odd = make({"x": NoRepr()})
    odd.value = 1
    odd.cache_copy = (1, 1)
    guard.after_run(odd, None)
    assert guard.before_dispatch(make({"x": NoRepr()})) is None


def test_restart_guard_allows_max_restarts_within_the_window_then_is_final() -> None:
    guard = RestartGuard(ResilienceConfig(max_restarts=2, restart_within_s=60.0,
                                          backoff_min_s=1.0, backoff_max_s=4.0))
    node = Node("p", _noop, category="provider")
    restarts: list[float] = []
    first = guard.retry_delay_s(node, ConnectionError(), restarts, now=0.0)
    second = guard.retry_delay_s(node, ConnectionError(), restarts, now=1.0)
    assert first is not None and 1.0 <= first <= 4.0
    assert second is not None and 1.0 <= second <= 4.0
    assert guard.retry_delay_s(node, ConnectionError(), restarts, now=2.0) is None
    # Not a sliding window: restarts older than it still count (a node whose re-runs the
    # backoff spaces out would otherwise be re-run forever).
    assert guard.retry_delay_s(node, ConnectionError(), restarts, now=61.5) is None
    assert restarts == [0.0, 1.0]
    assert guard.retry_delay_s(node, ValueError(), [], now=0.0) is None


def test_restart_guard_is_final_past_the_window_from_the_first_restart() -> None:
    guard = RestartGuard(ResilienceConfig(max_restarts=5, restart_within_s=10.0,
                                          backoff_min_s=1.0, backoff_max_s=4.0))
    node = Node("p", _noop, category="provider")
    restarts: list[float] = []
    assert guard.retry_delay_s(node, ConnectionError(), restarts, now=100.0) is not None
    assert guard.retry_delay_s(node, ConnectionError(), restarts, now=110.0) is not None
    assert guard.retry_delay_s(node, ConnectionError(), restarts, now=110.5) is None
    assert restarts == [100.0, 110.0]


def test_restart_guard_never_restarts_a_non_idempotent_action() -> None:
    guard = RestartGuard(ResilienceConfig(max_restarts=5))
    action = Node("buy", _noop, category="action")
    assert guard.retry_delay_s(action, ConnectionError(), [], now=0.0) is None
