"""A node stuck in a blocking call after its execution ended (cancel, halt, fail-fast) gives
its node actor up ABANDON_AFTER_CANCEL_S later, as a timed-out one does: other executions,
an on-halt hook among them, never wait for its timeout_s. A ManualClock moves the supervisor's
timers; the node's own gate keeps it stuck until the test lets it go."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from actors import Engine, ManualClock, Node, NodeContext, Workflow
from actors.supervisor_timers import ABANDON_AFTER_CANCEL_S
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import eventually

WAIT_S = 10.0


class Stuck:
    """A node function that ignores `ctx.cancelled`, blocked until `gate` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.returned = threading.Event()

    def __call__(self, ctx: NodeContext) -> str:
        self.entered.set()
        self.gate.wait(30)
        self.returned.set()
        return "late"


@pytest.fixture
def stuck() -> Iterator[Stuck]:
    node = Stuck()
    yield node
    node.gate.set()


def one_actor_engine(make_engine: EngineFactory, clock: ManualClock, **config: object
                     ) -> Engine:
    return make_engine({"daemon": {"supervisors": 1, "node_actors": 1}, **config},
                       clock=clock)


def quick() -> Workflow:
    return Workflow("quick", nodes=[Node("q", lambda ctx: 1)])


def test_a_cancelled_stuck_node_frees_its_actor_for_the_next_execution(
        make_engine: EngineFactory, stuck: Stuck) -> None:
    clock = ManualClock()
    engine = one_actor_engine(make_engine, clock)
    handle = engine.submit(Workflow("stuck", nodes=[Node("s", stuck, timeout_s=60)]))
    assert stuck.entered.wait(WAIT_S)
    engine.cancel(handle.execution_id)
    assert handle.result(timeout=WAIT_S).status == "cancelled"
    other = engine.submit(quick())  # the only node actor is held by the stuck one
    clock.advance(ABANDON_AFTER_CANCEL_S / 2)
    assert not other.done()  # (a cooperative node has this long to come back)
    clock.advance(ABANDON_AFTER_CANCEL_S / 2)
    assert other.result(timeout=WAIT_S).status == "completed"
    assert not stuck.returned.is_set()  # it ran beside the stuck node, not after it


def test_an_on_halt_hook_is_not_held_up_by_a_stuck_node(
        make_engine: EngineFactory, stuck: Stuck) -> None:
    """The hook that cancels resting orders waited for the stuck node's timeout_s (9 s of
    10 in the report; 30 s by default)."""
    clock = ManualClock()
    hooked = threading.Event()
    hook = Workflow("cancel_all", nodes=[Node("c", lambda ctx: hooked.set())])
    engine = make_engine({"daemon": {"supervisors": 1, "node_actors": 1}}, clock=clock,
                         on_halt=[hook])
    rec = Recorder().follow(engine)
    handle = engine.submit(Workflow("stuck", nodes=[Node("s", stuck, timeout_s=60)]))
    assert stuck.entered.wait(WAIT_S)
    engine.halt("operator")
    assert handle.result(timeout=WAIT_S).status == "halted"
    clock.advance(ABANDON_AFTER_CANCEL_S)
    assert hooked.wait(WAIT_S)
    rec.wait_for(lambda evs: any(e["type"] == "execution_completed"
                                 and e["workflow_id"] == "cancel_all" for e in evs))
    assert not stuck.returned.is_set()


def test_a_late_action_result_after_the_cancel_is_journaled_not_published(
        make_engine: EngineFactory, tmp_path: object) -> None:
    """The abandoned action's late result is recorded against its intent ("its execution
    had ended"), never published as a success."""
    clock = ManualClock()
    gate, entered = threading.Event(), threading.Event()

    def order(ctx: NodeContext) -> dict[str, str]:
        entered.set()
        gate.wait(30)
        return {"order_id": "o-1"}

    engine = one_actor_engine(make_engine, clock, daemon={
        "supervisors": 1, "node_actors": 1, "data_dir": str(tmp_path)})
    rec = Recorder().follow(engine)
    try:
        handle = engine.submit(Workflow("orders", nodes=[
            Node("place", order, category="action", timeout_s=60)]))
        assert entered.wait(WAIT_S)
        engine.cancel(handle.execution_id)
        assert handle.result(timeout=WAIT_S).status == "cancelled"
        clock.advance(ABANDON_AFTER_CANCEL_S)
        assert engine.submit(quick()).result(timeout=WAIT_S).status == "completed"
    finally:
        gate.set()

    def recorded() -> bool:
        (intent,) = engine.intents(unresolved=False)
        return (intent.get("detail") or {}).get("why") == "its execution had ended"

    eventually(recorded, WAIT_S, "the late result recorded against its intent")
    assert not [e for e in rec.events if e["type"] == "node_completed"
                and e["execution_id"] == handle.execution_id]


def breaker_config(threshold: int) -> dict[str, object]:
    return {"daemon": {"supervisors": 1, "node_actors": 4},
            "resilience": {"breaker_failure_threshold": threshold,
                           "breaker_reset_timeout_s": 30.0}}


def test_a_venue_hanging_past_the_workflow_deadline_still_opens_its_breaker(
        make_engine: EngineFactory, stuck: Stuck) -> None:
    """Runs cut by the workflow's timeout_s count as failures (the venue did not answer in
    time), unlike those a halt or a cancel ended: abandoned after the deadline, they were
    counted as nothing and the breaker never opened for a dead venue."""
    clock = ManualClock()
    engine = make_engine(breaker_config(2), clock=clock)
    wf = Workflow("quotes", timeout_s=1.0, nodes=[
        Node("quote", stuck, category="provider", breaker="binance", timeout_s=60)])
    for _ in range(2):
        stuck.entered.clear()
        handle = engine.submit(wf)
        assert stuck.entered.wait(WAIT_S)
        clock.advance(1.0)  # the workflow's deadline
        assert handle.result(timeout=WAIT_S).error_type == "ExecutionTimeout"
        clock.advance(ABANDON_AFTER_CANCEL_S)
    refused = engine.submit(wf).result(timeout=WAIT_S)
    assert refused.error_type == "CircuitOpen"
    assert engine.status()["breakers"]["binance"] == "open"


def test_a_stuck_trial_whose_execution_was_halted_leaves_the_next_run_the_trial(
        make_engine: EngineFactory, stuck: Stuck) -> None:
    """Abandoned after the halt, the trial's turn is freed: the breaker neither closes
    untested nor refuses every run for ever."""
    clock = ManualClock()
    engine = make_engine(breaker_config(1), clock=clock)

    def quotes(fn: Callable[[NodeContext], object]) -> Workflow:
        return Workflow("quotes", nodes=[Node("quote", fn, category="provider",
                                              breaker="binance", timeout_s=60, max_restarts=0)])

    def down(ctx: NodeContext) -> None:
        raise ConnectionError("venue down")

    assert engine.submit(quotes(down)).result(timeout=WAIT_S).error_type == "ConnectionError"
    clock.advance(30.0)  # half-open: the next run is the trial
    trial = engine.submit(quotes(stuck))
    assert stuck.entered.wait(WAIT_S)
    engine.halt("operator")
    assert trial.result(timeout=WAIT_S).status == "halted"
    clock.advance(ABANDON_AFTER_CANCEL_S)
    engine.resume("all clear")
    rec = Recorder().follow(engine)
    after = engine.submit(quotes(lambda ctx: {"price": 1.0})).result(timeout=WAIT_S)
    assert (after.status, after.error_type) == ("completed", None)
    rec.wait_for(lambda evs: any(e["type"] == "circuit_closed" for e in evs))
