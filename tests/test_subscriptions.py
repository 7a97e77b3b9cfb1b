"""In-process subscriptions are cursors over the ordered log, each on its own thread, off
the sequencing lock (README): a slow callback delays only itself; order, gaps,
result()-after-delivery, isolation of what each caller is handed, containment."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import structlog
import structlog.testing

from actors import Engine, Node, NodeContext, Subscription, Workflow
from actors.errors import TradeloomError, WaitInCallback
from actors.eventlog import DRAIN_S
from actors.events import validate_event
from actors.execution import ExecutionHandle
from tests.conftest import EngineFactory, Recorder

Event = dict[str, Any]


def one_node(name: str = "one") -> Workflow:
    return Workflow(name, nodes=[Node("n", lambda ctx: {"price": 1.0})])


def test_a_slow_callback_delays_neither_halt_nor_node_starts(engine: Engine) -> None:
    blocked, release = threading.Event(), threading.Event()

    def slow(event: Event) -> None:
        blocked.set()
        release.wait(1.5)  # a subscriber that takes 1.5 s over every event

    engine.subscribe(slow)
    first_ran, second_entered = threading.Event(), threading.Event()

    def first(ctx: NodeContext) -> int:
        first_ran.set()
        return 1

    def second(ctx: NodeContext) -> int:
        second_entered.set()
        ctx.cancelled.wait(10)
        return 2

    wf = Workflow("slow_sub", nodes=[Node("first", first),
                                     Node("second", second, depends_on=["first"])])
    try:
        handle = engine.submit(wf)
        assert blocked.wait(5)  # stuck in its first event (execution_started)
        # Nodes start, one after the other, while the callback is blocked.
        assert first_ran.wait(0.5) and second_entered.wait(0.5)
        started = time.monotonic()
        reply = engine.halt("halt while a subscriber is slow")
        assert time.monotonic() - started < 0.5
        assert reply["state"] == "HALT" and not release.is_set()
    finally:
        release.set()
    assert handle.result(timeout=10).status == "halted"


def test_each_subscription_gets_every_event_in_seq_order(engine: Engine) -> None:
    recorders = [Recorder() for _ in range(3)]
    threads: list[set[str]] = [set() for _ in recorders]
    for names, rec in zip(threads, recorders, strict=True):

        def record(event: Event, rec: Recorder = rec, names: set[str] = names) -> None:
            names.add(threading.current_thread().name)
            rec(event)

        rec.subscription = engine.subscribe(record)
    wf = Workflow("order", nodes=[Node("a", lambda ctx: 1), Node("b", lambda ctx: 2),
                                  Node("c", lambda ctx: 3, depends_on=["a", "b"])])
    handles = [engine.submit(wf) for _ in range(200)]
    assert all(h.result(timeout=30).status == "completed" for h in handles)
    last_seq = engine.status()["last_seq"]
    for rec in recorders:
        assert [e["seq"] for e in rec.events] == list(range(1, last_seq + 1))
    assert all(len(names) == 1 for names in threads)  # a thread each, its own
    assert len(set.union(*threads)) == 3


@pytest.mark.parametrize("own_handler", [False, True])
def test_a_subscription_behind_the_ring_gets_a_gap_notice(make_engine: EngineFactory,
                                                          own_handler: bool) -> None:
    engine = make_engine(_event_ring_size=16)
    fast = Recorder().follow(engine)
    blocked, release = threading.Event(), threading.Event()
    seen: list[Event] = []
    notices: list[Event] = []

    def slow(event: Event) -> None:
        seen.append(event)
        blocked.set()
        release.wait(10)

    sub = engine.subscribe(slow, on_gap=notices.append if own_handler else None)
    handles = [engine.submit(one_node())]
    try:
        assert blocked.wait(5)
        for i in range(20):  # 80 more events while it is stuck: 5 rings' worth
            handles.append(engine.submit(one_node()))
            fast.wait_type("execution_completed", i + 2)  # the fast one stays within 16
    finally:
        release.set()
    assert all(h.result(timeout=10).status == "completed" for h in handles)
    gaps = notices if own_handler else [e for e in seen if e["type"] == "gap"]
    assert len(gaps) == sub.gaps >= 1
    assert fast.subscription is not None and fast.subscription.gaps == 0
    assert not [e for e in seen if e["type"] == "gap"] or not own_handler
    covered: list[int] = []
    for event in seen:
        if event["type"] == "gap":
            covered += range(event["first_missing_seq"], event["last_missing_seq"] + 1)
        else:
            covered.append(event["seq"])
    for gap in gaps:
        assert validate_event(gap, strict=True) == []
        if own_handler:
            covered += range(gap["first_missing_seq"], gap["last_missing_seq"] + 1)
    assert sorted(covered) == list(range(1, engine.status()["last_seq"] + 1))
    assert sub.missed == sum(g["last_missing_seq"] - g["first_missing_seq"] + 1 for g in gaps)


def test_result_returns_after_every_subscriber_was_given_the_terminal_event(
        engine: Engine) -> None:
    terminals: set[str] = set()

    def record(event: Event) -> None:
        threading.Event().wait(0.001)  # a subscriber that does a little work
        terminals.add(event["execution_id"])

    engine.subscribe(record, types={"execution_completed"})
    engine.subscribe(lambda event: None)  # a second, fast one
    callbacks_saw: list[bool] = []
    handles = [engine.submit(one_node()) for _ in range(200)]
    for handle in handles:
        handle.add_done_callback(lambda h: callbacks_saw.append(h.execution_id in terminals))
    for handle in handles:
        assert handle.result(timeout=30).status == "completed"
        assert handle.execution_id in terminals
        assert handle.done()
    assert callbacks_saw == [True] * 200  # done callbacks run after delivery too


def test_waiting_from_a_callback_raises_instead_of_deadlocking(engine: Engine) -> None:
    earlier = engine.submit(one_node())
    assert earlier.result(timeout=5).status == "completed"
    handles: dict[str, ExecutionHandle] = {}
    go = threading.Event()
    refused: list[TradeloomError] = []
    answered: list[str] = []

    def impatient(event: Event) -> None:
        answered.append(earlier.result().status)  # delivered already: no wait, no error
        for wait in (lambda: handles[event["execution_id"]].result(timeout=5),
                     lambda: engine.halt("from a callback"),
                     lambda: engine.cancel(event["execution_id"])):
            try:
                wait()
            except TradeloomError as exc:
                refused.append(exc)

    engine.subscribe(impatient, types={"execution_completed"})
    handle = engine.submit(Workflow("gated", nodes=[Node("n", lambda ctx: go.wait(5))]))
    handles[handle.execution_id] = handle
    go.set()
    assert handle.result(timeout=5).status == "completed"
    assert answered == ["completed"]
    assert len(refused) == 3 and all(isinstance(e, WaitInCallback) for e in refused)
    assert "cannot wait from a subscriber callback" in str(refused[0])
    assert "engine.ref.tell" in str(refused[1])
    assert engine.state.value == "NORMAL"


def test_events_and_results_are_not_shared_mutable_state(engine: Engine) -> None:
    vandalised: set[int] = set()
    cond = threading.Condition()
    witnessed: list[Event] = []

    def vandal(event: Event) -> None:
        if event["type"] == "node_completed":
            event["outputs"]["price"] = -1.0
        elif event["type"] == "execution_completed":
            event["results"]["n"]["price"] = -1.0
            event["results"]["injected"] = True
            event["status"] = "hacked"
        with cond:
            vandalised.add(event["seq"])
            cond.notify_all()

    def witness(event: Event) -> None:
        with cond:  # only look once the vandal has done its worst to the same event
            assert cond.wait_for(lambda: event["seq"] in vandalised, 5)
        witnessed.append(event)

    engine.subscribe(vandal)
    engine.subscribe(witness)
    result = engine.submit(one_node()).result(timeout=5)
    by_type = {e["type"]: e for e in witnessed}
    assert by_type["node_completed"]["outputs"] == {"price": 1.0}
    assert by_type["execution_completed"]["results"] == {"n": {"price": 1.0}}
    assert by_type["execution_completed"]["status"] == "completed"
    assert result.results == {"n": {"price": 1.0}}
    with pytest.raises(TypeError):
        result.results["injected"] = True  # type: ignore[index]


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit(),
                                 ValueError("subscriber bug")], ids=lambda e: type(e).__name__)
def test_whatever_a_callback_raises_is_contained(engine: Engine, exc: BaseException) -> None:
    seqs: list[int] = []

    def broken(event: Event) -> None:
        seqs.append(event["seq"])
        raise exc

    sub = engine.subscribe(broken)
    results = [engine.submit(one_node()).result(timeout=5) for _ in range(3)]
    assert [r.status for r in results] == ["completed"] * 3
    assert seqs == list(range(1, engine.status()["last_seq"] + 1))
    assert sub.failures == len(seqs) and sub.running and not sub.closed


def test_a_callback_failing_on_every_event_logs_one_traceback_then_a_count(
        engine: Engine) -> None:
    def broken(event: Event) -> None:
        raise ValueError("subscriber bug")

    sub = engine.subscribe(broken)
    with structlog.testing.capture_logs() as logs:
        for _ in range(3):
            assert engine.submit(one_node()).result(timeout=5).status == "completed"
    failed = [entry for entry in logs if entry["event"] == "subscriber_failed"]
    assert sub.failures == engine.status()["last_seq"] > 3
    assert len(failed) == 1  # the first, within FAILURE_LOG_EVERY_S of every other
    assert failed[0]["failures"] == 1 and "subscriber bug" in failed[0]["traceback"]
    assert failed[0]["error_type"] == "ValueError"


def test_a_subscription_may_close_itself_from_its_callback(engine: Engine,
                                                           recorder: Recorder) -> None:
    seen: list[int] = []
    subs: list[Subscription] = []

    def once(event: Event) -> None:
        seen.append(event["seq"])
        subs[0].close()

    subs.append(engine.subscribe(once))
    for _ in range(2):
        assert engine.submit(one_node()).result(timeout=5).status == "completed"
    assert seen == [1] and subs[0].closed
    subs[0].close(timeout=5)
    assert not subs[0].running
    assert len(recorder.events) == engine.status()["last_seq"]


def test_stop_returns_promptly_with_a_stuck_callback(make_engine: EngineFactory) -> None:
    engine = make_engine()
    stuck, never = threading.Event(), threading.Event()

    def hung(event: Event) -> None:
        stuck.set()
        never.wait(30)

    sub = engine.subscribe(hung)
    try:
        handle = engine.submit(one_node())
        assert stuck.wait(5)
        started = time.monotonic()
        engine.stop(timeout=5)
        assert time.monotonic() - started < DRAIN_S + 2.0
        assert sub.closed and sub.running  # abandoned, still in its callback
        assert handle.result(timeout=1).status in {"completed", "cancelled"}  # not waited for
    finally:
        never.set()


def test_types_must_be_a_collection(engine: Engine) -> None:
    with pytest.raises(TypeError, match="not one string"):
        engine.subscribe(lambda e: None, types="node_completed")
    with pytest.raises(TypeError, match="types must be a collection of event types, not int"):
        engine.subscribe(lambda e: None, types=5)  # type: ignore[arg-type]


def test_catch_up_is_false_for_a_crashed_subscription_and_true_for_a_closed_one(
        engine: Engine) -> None:
    crashed = engine.subscribe(lambda e: None)
    closed = engine.subscribe(lambda e: None)

    def engine_bug(events: list[Event], fresh: bool) -> None:
        raise RuntimeError("a bug in the delivery pass")

    crashed._deliver = engine_bug  # type: ignore[method-assign]  # the thread calls it next
    assert engine.submit(one_node()).result(timeout=5).status == "completed"
    assert crashed.join(5) and crashed.closed
    assert isinstance(crashed.crashed, RuntimeError)
    assert crashed.catch_up(5) is False  # the events after the crash were never handled
    assert closed.catch_up(5) is True and closed.crashed is None
    closed.close(timeout=5)
    assert closed.catch_up(5) is True


@pytest.mark.parametrize("workflow_id", ["a b", "", "x/y", "é"])
def test_a_workflow_id_no_workflow_can_have_is_refused(engine: Engine,
                                                        workflow_id: str) -> None:
    """As an unknown event type: a subscription that can match nothing is a typo."""
    with pytest.raises(ValueError, match="no workflow id is"):
        engine.subscribe(lambda event: None, workflow_id=workflow_id)
