"""Resilience: restarts with backoff, the restart bounds, per-node restart_on, node and
workflow timeouts, at-most-once actions, halt and cancel during a backoff wait, presets.

Real engines, real actors and threads. Time is a `ManualClock` wherever a deadline matters
(so a 30 s backoff takes microseconds), or a real clock with deadlines of a fraction of a
second where the point is real time. Every wait is on an event, a condition or an actor
reply, with a timeout: no sleep is ever used to synchronise.

A "barrier" below is `engine.supervisor_stats()`: an `ask` to every supervisor, answered
only after everything already in its inbox (a `Tick` from `clock.advance`, a `NodeDone`
told earlier) has been handled.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from actors import (
    Config,
    ConfigError,
    Engine,
    ManualClock,
    Node,
    NodeContext,
    ResilienceConfig,
    Workflow,
    WorkflowDefinitionError,
)
from actors.execution import ExecutionResult
from tests.conftest import Recorder

EngineFactory = Callable[..., Engine]
TERMINAL = {"execution_completed", "execution_failed", "execution_halted",
            "execution_cancelled"}


# -- helpers -------------------------------------------------------------------------------

def recorded(engine: Engine) -> Recorder:
    rec = Recorder()
    rec.follow(engine)
    return rec


def barrier(engine: Engine) -> list[dict[str, Any]]:
    """Every supervisor has handled everything that was in its inbox before this call."""
    return engine.supervisor_stats()


def busy(engine: Engine) -> int:
    """Runs handed to node actors and not yet answered (0 when nothing is running)."""
    total = 0
    for s in barrier(engine):
        if "runs_in_flight" in s:
            total += s["runs_in_flight"]
        else:  # the warm-pool layout of the supervisor's stats
            total += s["pool_started"] - s["pool_idle"] - s["abandoned"]
    return total


def abandoned(engine: Engine) -> int:
    """Node actors given up on because their run overran."""
    return sum(s.get("node_actors_abandoned", s.get("abandoned", 0)) for s in barrier(engine))


def node_events(rec: Recorder, execution_id: str, node_id: str) -> list[dict[str, Any]]:
    return [e for e in rec.for_execution(execution_id) if e.get("node_id") == node_id]


def node_types(rec: Recorder, execution_id: str, node_id: str) -> list[str]:
    return [e["type"] for e in node_events(rec, execution_id, node_id)
            if e["type"] != "progress"]


def of_type(rec: Recorder, execution_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in rec.for_execution(execution_id) if e["type"] == kind]


def wait_count(rec: Recorder, execution_id: str, kind: str, n: int,
               timeout: float = 10.0) -> list[dict[str, Any]]:
    rec.wait_for(lambda evs: sum(e["type"] == kind and e.get("execution_id") == execution_id
                                 for e in evs) >= n, timeout)
    return of_type(rec, execution_id, kind)


def assert_terminal_last(rec: Recorder, execution_id: str, terminal: str) -> None:
    """Exactly one terminal event, of the given type, and it is the execution's last event."""
    types = rec.types(execution_id)
    assert [t for t in types if t in TERMINAL] == [terminal], types
    assert types[-1] == terminal, f"events after {terminal}: {types}"


class Calls:
    """A thread-safe record of the calls a node function received."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contexts: list[NodeContext] = []
        self.threads: list[threading.Thread] = []

    def note(self, ctx: NodeContext) -> int:
        with self._lock:
            self.contexts.append(ctx)
            self.threads.append(threading.current_thread())
            return len(self.contexts)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.contexts)

    @property
    def attempts(self) -> list[int]:
        with self._lock:
            return [c.attempt for c in self.contexts]


# -- restarts with backoff -----------------------------------------------------------------

def test_two_connection_errors_then_success_retries_with_backoff(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine({"daemon": {"supervisors": 1}}, clock=clock)
    rec = recorded(engine)
    calls = Calls()

    def flaky(ctx: NodeContext) -> dict[str, int]:
        n = calls.note(ctx)
        if n < 3:
            raise ConnectionError(f"exchange unreachable ({n})")
        return {"price": 100, "attempt": ctx.attempt}

    wf = Workflow("flaky", nodes=[
        Node("quote", flaky, category="provider", max_restarts=2, restart_within_s=600.0,
             backoff_min_s=1.0, backoff_max_s=4.0),
        Node("after", lambda ctx: ctx.upstream["quote"]["price"], depends_on=["quote"]),
    ])
    handle = engine.submit(wf)
    eid = handle.execution_id
    for n in (1, 2):
        retrying = wait_count(rec, eid, "node_retrying", n)[-1]
        delay_s = retrying["delay_ms"] / 1000.0
        assert 1000.0 <= retrying["delay_ms"] <= 4000.0, retrying
        # Not one moment early: just short of the delay the node is neither running nor run.
        clock.advance(delay_s - 0.01)
        assert busy(engine) == 0
        assert calls.count == n
        clock.advance(0.02)
    result = handle.result(timeout=5)

    assert result.status == "completed", result
    assert result.results["quote"] == {"price": 100, "attempt": 3}
    assert result.results["after"] == 100
    assert result.nodes["quote"]["attempts"] == 3
    assert calls.attempts == [1, 2, 3]
    assert node_types(rec, eid, "quote") == [
        "node_started", "node_failed", "node_retrying",
        "node_started", "node_failed", "node_retrying",
        "node_started", "node_completed"]
    events = [e for e in node_events(rec, eid, "quote") if e["type"] != "progress"]
    assert [e["attempt"] for e in events] == [1, 1, 2, 2, 2, 3, 3, 3]
    for failed, retrying in ((events[1], events[2]), (events[4], events[5])):
        assert failed["final"] is False
        assert failed["error_type"] == "ConnectionError"
        assert "exchange unreachable" in failed["error"]
        assert retrying["attempt"] == failed["attempt"] + 1
        assert retrying["error_type"] == "ConnectionError"
        assert 1000.0 <= retrying["delay_ms"] <= 4000.0
    assert events[-1]["attempt"] == 3 and events[-1]["status"] == "success"
    assert_terminal_last(rec, eid, "execution_completed")


def test_retry_with_a_real_clock_and_tiny_backoff(make_engine: EngineFactory) -> None:
    engine = make_engine()
    rec = recorded(engine)
    calls = Calls()

    def flaky(ctx: NodeContext) -> int:
        if calls.note(ctx) < 3:
            raise TimeoutError("slow exchange")
        return ctx.attempt

    wf = Workflow("tiny_backoff", nodes=[
        Node("quote", flaky, category="provider", backoff_min_s=0.005, backoff_max_s=0.02)])
    t0 = time.perf_counter()
    result = engine.submit(wf).result(timeout=5)
    elapsed = time.perf_counter() - t0
    assert result.status == "completed", result
    assert result.results["quote"] == 3
    delays = [e["delay_ms"] for e in of_type(rec, result.execution_id, "node_retrying")]
    assert len(delays) == 2
    assert all(5.0 <= d <= 20.0 for d in delays), delays
    assert elapsed >= sum(delays) / 1000.0 - 0.002  # it really waited
    assert elapsed < 2.0


def test_backoff_grows_exponentially_up_to_backoff_max(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine(clock=clock)
    rec = recorded(engine)
    calls = Calls()

    def always_down(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("down")

    wf = Workflow("capped", nodes=[
        Node("quote", always_down, category="provider", max_restarts=6,
             restart_within_s=10_000.0, backoff_min_s=1.0, backoff_max_s=5.0)])
    handle = engine.submit(wf)
    eid = handle.execution_id
    for n in range(1, 7):
        retrying = wait_count(rec, eid, "node_retrying", n)[-1]
        clock.advance(retrying["delay_ms"] / 1000.0 + 0.001)
    result = handle.result(timeout=5)
    delays = [e["delay_ms"] for e in of_type(rec, eid, "node_retrying")]
    assert all(1000.0 <= d <= 5000.0 for d in delays), delays
    # 1 s * 2**(n-1) passes the 5 s cap from the fourth restart on.
    assert delays[3:] == [5000.0, 5000.0, 5000.0], delays
    assert delays[0] < 5000.0
    assert result.status == "failed" and result.error_type == "ConnectionError"
    assert calls.count == 7


def test_non_restartable_error_fails_at_once(make_engine: EngineFactory) -> None:
    engine = make_engine()
    rec = recorded(engine)
    calls = Calls()

    def bad(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ValueError("price must be positive")

    wf = Workflow("bad_value", nodes=[
        Node("quote", bad, category="provider", backoff_min_s=0.0, backoff_max_s=0.0),
        Node("trade", lambda ctx: "never", category="action", depends_on=["quote"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    eid = result.execution_id
    assert result.status == "failed"
    assert result.error_type == "ValueError"
    assert result.error == "price must be positive"
    assert calls.count == 1
    assert node_types(rec, eid, "quote") == ["node_started", "node_failed"]
    failed = of_type(rec, eid, "node_failed")[0]
    assert failed["final"] is True and failed["attempt"] == 1
    assert failed["error_type"] == "ValueError"
    assert of_type(rec, eid, "node_retrying") == []
    skipped = of_type(rec, eid, "node_skipped")
    assert [(e["node_id"], e["reason"]) for e in skipped] == [("trade", "upstream_failed")]
    terminal = of_type(rec, eid, "execution_failed")[0]
    assert terminal["error_type"] == "ValueError"
    assert_terminal_last(rec, eid, "execution_failed")


def test_max_restarts_used_up_fails_with_the_last_error(make_engine: EngineFactory) -> None:
    engine = make_engine()
    rec = recorded(engine)
    calls = Calls()
    errors = [ConnectionError("first"), TimeoutError("second"), ConnectionError("third")]

    def failing(ctx: NodeContext) -> None:
        n = calls.note(ctx)
        raise errors[n - 1]

    wf = Workflow("intensity", nodes=[
        Node("quote", failing, category="provider", max_restarts=2, restart_within_s=60.0,
             backoff_min_s=0.001, backoff_max_s=0.002)])
    result = engine.submit(wf).result(timeout=5)
    eid = result.execution_id
    assert calls.count == 3
    assert result.status == "failed"
    assert (result.error, result.error_type) == ("third", "ConnectionError")
    failed = of_type(rec, eid, "node_failed")
    assert [(e["attempt"], e["final"], e["error_type"]) for e in failed] == [
        (1, False, "ConnectionError"), (2, False, "TimeoutError"), (3, True, "ConnectionError")]
    assert [e["attempt"] for e in of_type(rec, eid, "node_retrying")] == [2, 3]
    terminal = of_type(rec, eid, "execution_failed")[0]
    assert (terminal["error"], terminal["error_type"]) == ("third", "ConnectionError")
    assert result.nodes["quote"]["attempts"] == 3


def test_a_failure_past_restart_within_s_of_the_first_restart_is_final(
        make_engine: EngineFactory) -> None:
    """max_restarts=3 within 10 s: a failure 11 s after the node's first restart is final,
    though only one of its three restarts was used."""
    clock = ManualClock()
    engine = make_engine(clock=clock)
    rec = recorded(engine)
    outcomes: queue.Queue[BaseException] = queue.Queue()
    calls = Calls()

    def scripted(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise outcomes.get(timeout=10)

    wf = Workflow("window", nodes=[
        Node("quote", scripted, category="provider", max_restarts=3, restart_within_s=10.0,
             backoff_min_s=0.0, backoff_max_s=0.0, timeout_s=1000.0)])
    handle = engine.submit(wf)
    eid = handle.execution_id
    outcomes.put(ConnectionError("one"))
    wait_count(rec, eid, "node_started", 2)       # restarted at once (no backoff)
    clock.advance(11.0)                           # the window since that restart is over
    outcomes.put(ConnectionError("two"))
    result = handle.result(timeout=5)
    assert (result.status, result.error, result.error_type) == (
        "failed", "two", "ConnectionError")
    assert calls.count == 2
    assert [e["final"] for e in of_type(rec, eid, "node_failed")] == [False, True]


def test_a_node_that_always_fails_ends_when_its_backoff_outlasts_the_window(
        make_engine: EngineFactory) -> None:
    """Re-runs spaced wider than restart_within_s never filled a sliding window: the node
    was re-run forever and its execution never ended. Now max_restarts caps them."""
    clock = ManualClock()
    engine = make_engine(clock=clock)
    rec = recorded(engine)
    calls = Calls()

    def down(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("exchange down")

    wf = Workflow("spaced", nodes=[
        Node("quote", down, category="provider", max_restarts=2, restart_within_s=60.0,
             backoff_min_s=40.0, backoff_max_s=40.0, timeout_s=1000.0)])
    handle = engine.submit(wf)
    eid = handle.execution_id
    for restarts in (1, 2):
        wait_count(rec, eid, "node_retrying", restarts)
        clock.advance(41.0)  # past the backoff (exactly 40 s: min = max)
    result = handle.result(timeout=5)
    assert (result.status, result.error_type) == ("failed", "ConnectionError")
    assert calls.count == 3
    assert [e["final"] for e in of_type(rec, eid, "node_failed")] == [False, False, True]


@pytest.mark.parametrize(("restart_on", "error", "restarts"), [
    ((ValueError,), ValueError("bad tick"), True),
    ((ValueError,), ConnectionError("down"), False),   # the node's list replaces the default
    ((), ConnectionError("down"), False),
    ((OSError,), ConnectionError("down"), True),       # subclasses count
    (None, TimeoutError("slow"), True),                # the default list
    (None, KeyError("price"), False),
])
def test_restart_on_is_per_node(make_engine: EngineFactory,
                                restart_on: tuple[type[BaseException], ...] | None,
                                error: BaseException, restarts: bool) -> None:
    engine = make_engine()
    rec = recorded(engine)
    calls = Calls()

    def once(ctx: NodeContext) -> str:
        if calls.note(ctx) == 1:
            raise error
        return "ok"

    other_calls = Calls()

    def other(ctx: NodeContext) -> str:
        if other_calls.note(ctx) == 1:
            raise ConnectionError("down")
        return "ok"

    wf = Workflow("restart_on", nodes=[
        Node("quote", once, category="provider", restart_on=restart_on, max_restarts=1,
             backoff_min_s=0.0, backoff_max_s=0.0),
        # A sibling without restart_on keeps the default list.
        Node("other", other, category="provider", max_restarts=1,
             backoff_min_s=0.0, backoff_max_s=0.0),
    ])
    result = engine.submit(wf).result(timeout=5)
    eid = result.execution_id
    retrying = [e for e in of_type(rec, eid, "node_retrying") if e["node_id"] == "quote"]
    if restarts:
        assert result.status == "completed", result
        assert calls.count == 2
        assert [e["error_type"] for e in retrying] == [type(error).__name__]
        assert other_calls.count == 2
    else:
        assert result.status == "failed"
        assert result.error_type == type(error).__name__
        assert calls.count == 1
        assert retrying == []
        failed = [e for e in of_type(rec, eid, "node_failed") if e["node_id"] == "quote"]
        assert [e["final"] for e in failed] == [True]


# -- node timeouts -------------------------------------------------------------------------

def test_hanging_node_times_out_and_its_actor_is_never_reused(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"supervisors": 1}})
    rec = recorded(engine)
    release = threading.Event()
    calls = Calls()

    def sometimes_stuck(ctx: NodeContext) -> dict[str, Any]:
        if calls.note(ctx) == 1:
            release.wait(10)  # stuck, and deaf to ctx.cancelled
            return {"late": True}
        return {"fresh": True}

    timeout_s = 0.2
    wf = Workflow("stuck", nodes=[
        Node("quote", sometimes_stuck, category="provider", timeout_s=timeout_s,
             max_restarts=0),
        Node("after", lambda ctx: "never", depends_on=["quote"]),
    ])
    try:
        t0 = time.perf_counter()
        handle = engine.submit(wf)
        first = handle.result(timeout=5)
        elapsed = time.perf_counter() - t0
        eid = first.execution_id
        assert first.status == "failed"
        assert first.error_type == "NodeTimeout"
        assert timeout_s - 0.005 <= elapsed <= timeout_s + 0.05, elapsed
        failed = of_type(rec, eid, "node_failed")
        assert [(e["error_type"], e["final"], e["attempt"]) for e in failed] == [
            ("NodeTimeout", True, 1)]
        stuck_ctx, stuck_thread = calls.contexts[0], calls.threads[0]
        assert stuck_ctx.cancelled.is_set()
        assert stuck_thread.is_alive()

        # The same node again, while the first is still stuck: a fresh actor and thread.
        second = engine.submit(wf).result(timeout=5)
        assert second.status == "completed", second
        assert second.results["quote"] == {"fresh": True}
        assert calls.threads[1] is not stuck_thread
        assert calls.threads[1].ident != stuck_thread.ident  # both alive: idents are unique
        assert abandoned(engine) == 1
    finally:
        release.set()
    # The abandoned actor stops itself once the function returns; its result is dropped.
    stuck_thread.join(timeout=5)
    assert not stuck_thread.is_alive(), "the abandoned node actor did not stop"
    barrier(engine)  # its NodeDone (told before its thread ended) has been handled
    assert of_type(rec, eid, "node_completed") == []
    assert first.results == {}
    assert_terminal_last(rec, eid, "execution_failed")
    # A third run still works and never lands on the abandoned actor.
    third = engine.submit(wf).result(timeout=5)
    assert third.status == "completed"
    assert calls.threads[2] is not stuck_thread


def test_timed_out_node_restarts_on_a_fresh_actor(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine({"daemon": {"supervisors": 1}}, clock=clock)
    rec = recorded(engine)
    release = threading.Event()
    calls = Calls()

    def stuck_once(ctx: NodeContext) -> str:
        if calls.note(ctx) == 1:
            release.wait(10)
            return "late"
        return "second try"

    wf = Workflow("stuck_once", nodes=[
        Node("quote", stuck_once, category="provider", timeout_s=5.0, max_restarts=1,
             backoff_min_s=0.0, backoff_max_s=0.0)])
    try:
        handle = engine.submit(wf)
        eid = handle.execution_id
        wait_count(rec, eid, "node_started", 1)
        clock.advance(4.9)
        assert not handle.done() and busy(engine) == 1
        clock.advance(0.1)
        result = handle.result(timeout=5)
        assert result.status == "completed", result
        assert result.results["quote"] == "second try"
        assert calls.threads[1] is not calls.threads[0]
        assert calls.threads[0].is_alive()
        failed = of_type(rec, eid, "node_failed")[0]
        assert (failed["error_type"], failed["final"]) == ("NodeTimeout", False)
        retrying = of_type(rec, eid, "node_retrying")[0]
        assert (retrying["error_type"], retrying["attempt"]) == ("NodeTimeout", 2)
    finally:
        release.set()
    calls.threads[0].join(timeout=5)
    barrier(engine)
    completed = of_type(rec, eid, "node_completed")
    assert [(e["attempt"], e["outputs"]) for e in completed] == [(2, "second try")]
    assert_terminal_last(rec, eid, "execution_completed")


# -- a run that waits for a node actor -----------------------------------------------------
# With `daemon.node_actors` capping a supervisor's node actors, a run can wait in the pool's
# mailbox while every actor is busy. A node's `timeout_s` is how long it may *run* (the
# README: a node that overruns it fails): its clock starts when the node starts. What bounds the
# wait is the workflow's `timeout_s`.

def _saturated_pool(make_engine: EngineFactory, release: threading.Event
                    ) -> tuple[Engine, Recorder, ExecutionResult]:
    """One node actor, held by a hog; a node with timeout_s=0.2 waits behind it for five
    times that (a ManualClock: the supervisor has handled the deadline when the barrier
    returns). It must not time out: it starts when the hog is done, and completes."""
    clock = ManualClock()
    engine = make_engine({"daemon": {"supervisors": 1, "node_actors": 1}}, clock=clock)
    rec = recorded(engine)
    hog = Workflow("hog", nodes=[Node("hog", lambda ctx: release.wait(10), timeout_s=30.0)])
    quick = Workflow("quick", nodes=[
        Node("quick", lambda ctx: "quick", timeout_s=0.2, max_restarts=0)])
    hog_handle = engine.submit(hog)
    wait_count(rec, hog_handle.execution_id, "node_started", 1)
    quick_handle = engine.submit(quick)  # no node actor free: it waits behind the hog
    barrier(engine)  # started at this clock reading, its timeout armed
    clock.advance(1.0)
    barrier(engine)
    assert not quick_handle.done()
    assert node_types(rec, quick_handle.execution_id, "quick") == []
    release.set()
    assert hog_handle.result(timeout=5).status == "completed"
    queued = quick_handle.result(timeout=5)
    assert (queued.status, queued.error_type, queued.results) == (
        "completed", None, {"quick": "quick"})
    for _ in range(3):
        assert engine.submit(quick).result(timeout=5).status == "completed"
    return engine, rec, queued


def test_a_run_waiting_for_a_node_actor_does_not_time_out_before_it_starts(
        make_engine: EngineFactory) -> None:
    release = threading.Event()
    try:
        _, rec, queued = _saturated_pool(make_engine, release)
    finally:
        release.set()
    assert node_types(rec, queued.execution_id, "quick") == ["node_started", "node_completed"]
    assert_terminal_last(rec, queued.execution_id, "execution_completed")


def test_the_workflow_timeout_ends_a_run_still_waiting_for_a_node_actor(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine({"daemon": {"supervisors": 1, "node_actors": 1}}, clock=clock)
    rec = recorded(engine)
    release = threading.Event()
    calls = Calls()

    def quick_fn(ctx: NodeContext) -> str:
        calls.note(ctx)
        return "quick"

    hog = Workflow("hog", nodes=[Node("hog", lambda ctx: release.wait(10), timeout_s=30.0)])
    quick = Workflow("quick", nodes=[Node("quick", quick_fn, timeout_s=0.2)], timeout_s=1.0)
    try:
        hog_handle = engine.submit(hog)
        wait_count(rec, hog_handle.execution_id, "node_started", 1)
        handle = engine.submit(quick)
        barrier(engine)  # started at this clock reading, its deadline armed
        clock.advance(1.0)
        result = handle.result(timeout=5)
    finally:
        release.set()
    assert (result.status, result.error_type) == ("failed", "ExecutionTimeout")
    assert hog_handle.result(timeout=5).status == "completed"
    barrier(engine)  # the run the node actor took after the hog was refused, not run
    assert calls.count == 0
    assert [(e["type"], e.get("reason")) for e in node_events(rec, result.execution_id,
                                                               "quick")] == [
        ("node_skipped", "cancelled")]
    assert_terminal_last(rec, result.execution_id, "execution_failed")


@pytest.mark.parametrize("queued_timeout", [False, True])
def test_stop_ends_every_node_actor_thread(make_engine: EngineFactory,
                                           queued_timeout: bool) -> None:
    """Engine.stop() stops every actor; a run that timed out while queued must not leave
    a node actor behind that nobody counts (and so nobody stops)."""
    before = set(threading.enumerate())
    release = threading.Event()
    try:
        if queued_timeout:
            engine, _, _ = _saturated_pool(make_engine, release)
        else:
            engine = make_engine({"daemon": {"supervisors": 1, "node_actors": 1}})
            wf = Workflow("plain", nodes=[Node("n", lambda ctx: "ok")])
            for _ in range(4):
                assert engine.submit(wf).result(timeout=5).status == "completed"
    finally:
        release.set()
    started = [t for t in threading.enumerate() if t not in before]
    assert started
    engine.stop()
    deadline = time.monotonic() + 3.0
    for t in started:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    assert [t.name for t in started if t.is_alive()] == []


# -- at most once for actions --------------------------------------------------------------

def test_action_that_failed_after_starting_is_not_rerun(make_engine: EngineFactory) -> None:
    # Even with generous engine defaults, a non-idempotent action runs at most once.
    engine = make_engine({"resilience": {"max_restarts": 5, "backoff_min_s": 0.0,
                                         "backoff_max_s": 0.0}})
    rec = recorded(engine)
    calls = Calls()

    def place_order(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("connection reset after the order was sent")

    wf = Workflow("once", nodes=[
        Node("quote", lambda ctx: 1.0, category="provider"),
        Node("trade", place_order, category="action", depends_on=["quote"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    eid = result.execution_id
    assert result.status == "failed" and result.error_type == "ConnectionError"
    assert calls.count == 1
    assert node_types(rec, eid, "trade") == ["node_started", "node_failed"]
    failed = of_type(rec, eid, "node_failed")[0]
    assert failed["final"] is True and failed["attempt"] == 1
    assert of_type(rec, eid, "node_retrying") == []
    assert_terminal_last(rec, eid, "execution_failed")


def test_action_that_timed_out_is_not_rerun_and_its_late_result_is_not_published(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"resilience": {"backoff_min_s": 0.0, "backoff_max_s": 0.0}})
    rec = recorded(engine)
    release = threading.Event()
    calls = Calls()

    def slow_order(ctx: NodeContext) -> dict[str, str]:
        calls.note(ctx)
        release.wait(10)
        return {"order_id": ctx.idempotency_key}

    wf = Workflow("slow_action", nodes=[
        Node("trade", slow_order, category="action", timeout_s=0.1)])
    try:
        result = engine.submit(wf).result(timeout=5)
        assert result.status == "failed" and result.error_type == "NodeTimeout"
        assert calls.count == 1
    finally:
        release.set()
    calls.threads[0].join(timeout=5)
    barrier(engine)
    eid = result.execution_id
    assert node_types(rec, eid, "trade") == ["node_started", "node_failed"]
    assert of_type(rec, eid, "node_failed")[0]["final"] is True
    assert_terminal_last(rec, eid, "execution_failed")


def test_idempotent_action_is_rerun_with_the_same_idempotency_key(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    rec = recorded(engine)
    calls = Calls()

    def place_order(ctx: NodeContext) -> dict[str, Any]:
        if calls.note(ctx) < 3:
            raise ConnectionError("gateway reset")
        return {"client_order_id": ctx.idempotency_key}

    wf = Workflow("idem", nodes=[
        Node("trade", place_order, category="action", idempotent=True, max_restarts=2,
             backoff_min_s=0.001, backoff_max_s=0.002)])
    result = engine.submit(wf).result(timeout=5)
    eid = result.execution_id
    assert result.status == "completed", result
    key = f"{eid}:trade"
    assert [c.idempotency_key for c in calls.contexts] == [key, key, key]
    assert calls.attempts == [1, 2, 3]
    assert result.results["trade"] == {"client_order_id": key}
    assert [e["attempt"] for e in of_type(rec, eid, "node_started")] == [1, 2, 3]
    assert of_type(rec, eid, "node_completed")[0]["attempt"] == 3


def test_idempotent_action_takes_the_engine_default_max_restarts(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"resilience": {"max_restarts": 1, "backoff_min_s": 0.0,
                                         "backoff_max_s": 0.0}})
    calls = Calls()

    def place_order(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("gateway reset")

    wf = Workflow("idem_default", nodes=[
        Node("trade", place_order, category="action", idempotent=True)])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "failed" and result.error_type == "ConnectionError"
    assert calls.count == 2


def test_action_with_restarts_needs_idempotent() -> None:
    with pytest.raises(WorkflowDefinitionError) as info:
        Node("trade", lambda ctx: None, category="action", max_restarts=2)
    assert info.value.node_id == "trade"
    assert "trade" in str(info.value)
    # Allowed: zero restarts, or restarts of an idempotent action.
    assert Node("trade", lambda ctx: None, category="action", max_restarts=0).max_restarts == 0
    assert Node("trade", lambda ctx: None, category="action").max_restarts == 0
    idem = Node("trade", lambda ctx: None, category="action", max_restarts=2, idempotent=True)
    assert idem.max_restarts == 2


# -- halt and cancel during a backoff wait -------------------------------------------------

def _waiting_in_backoff(make_engine: EngineFactory, clock: ManualClock | None
                        ) -> tuple[Engine, Recorder, Calls, Any]:
    engine = make_engine(clock=clock)
    rec = recorded(engine)
    calls = Calls()

    def down(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("down")

    wf = Workflow("backoff_wait", nodes=[
        Node("quote", down, category="provider", max_restarts=3,
             backoff_min_s=30.0, backoff_max_s=60.0),
        Node("trade", lambda ctx: "never", category="action", depends_on=["quote"]),
    ])
    handle = engine.submit(wf)
    retrying = wait_count(rec, handle.execution_id, "node_retrying", 1)[0]
    assert retrying["delay_ms"] >= 30_000.0
    return engine, rec, calls, handle


@pytest.mark.parametrize("clock_kind", ["manual", "real"])
def test_halt_during_backoff_ends_the_execution_promptly(make_engine: EngineFactory,
                                                         clock_kind: str) -> None:
    clock = ManualClock() if clock_kind == "manual" else None
    engine, rec, calls, handle = _waiting_in_backoff(make_engine, clock)
    eid = handle.execution_id
    t0 = time.perf_counter()
    engine.halt("x")
    result = handle.result(timeout=2)
    elapsed = time.perf_counter() - t0
    assert result.status == "halted"
    assert elapsed < 0.5, elapsed
    assert [(e["node_id"], e["reason"]) for e in of_type(rec, eid, "node_skipped")] == [
        ("quote", "halted"), ("trade", "halted")]
    assert result.nodes["quote"]["status"] == "skipped"
    assert_terminal_last(rec, eid, "execution_halted")
    if clock is not None:
        # Past the backoff, halted or resumed: the node is not run again.
        clock.advance(120.0)
        engine.resume("back")
        clock.advance(120.0)
        assert busy(engine) == 0
        assert sum(s["timers"] for s in barrier(engine)) == 0  # the retry timer fired idle
    assert calls.count == 1
    assert len(of_type(rec, eid, "node_started")) == 1
    assert_terminal_last(rec, eid, "execution_halted")


def test_cancel_during_backoff_ends_the_execution_promptly(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec, calls, handle = _waiting_in_backoff(make_engine, clock)
    eid = handle.execution_id
    t0 = time.perf_counter()
    assert engine.cancel(eid) == "cancelled"
    result = handle.result(timeout=2)
    elapsed = time.perf_counter() - t0
    assert result.status == "cancelled" and result.error_type == "Cancelled"
    assert elapsed < 0.5, elapsed
    assert {e["reason"] for e in of_type(rec, eid, "node_skipped")} == {"cancelled"}
    clock.advance(120.0)
    assert busy(engine) == 0
    assert calls.count == 1
    assert len(of_type(rec, eid, "node_started")) == 1
    assert_terminal_last(rec, eid, "execution_cancelled")
    assert engine.cancel(eid) == "cancelled"  # asking again reports the recorded status


# -- workflow timeout ----------------------------------------------------------------------

def test_workflow_timeout_fails_the_execution_and_cancels_running_nodes(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    # One node actor: a later run takes it only after the cancelled node has returned, so
    # that run's result means the cancelled node's late reply has been handled too.
    engine = make_engine({"daemon": {"supervisors": 1, "node_actors": 1}}, clock=clock)
    rec = recorded(engine)
    saw_cancel = threading.Event()
    calls = Calls()

    def cooperative(ctx: NodeContext) -> str:
        calls.note(ctx)
        if ctx.cancelled.wait(10):
            saw_cancel.set()
        return "too late"

    wf = Workflow("deadline", timeout_s=5.0, nodes=[
        Node("quote", lambda ctx: 1.0, category="provider"),
        Node("slow", cooperative, depends_on=["quote"], timeout_s=60.0),
        Node("trade", lambda ctx: "never", category="action", depends_on=["slow"]),
    ])
    handle = engine.submit(wf)
    eid = handle.execution_id
    rec.wait_for(lambda evs: any(e["type"] == "node_started" and e.get("node_id") == "slow"
                                 and e.get("execution_id") == eid for e in evs))
    clock.advance(4.5)
    barrier(engine)
    assert not handle.done()
    clock.advance(0.5)
    result = handle.result(timeout=5)
    assert result.status == "failed"
    assert result.error_type == "ExecutionTimeout"
    assert saw_cancel.wait(5), "the running node was not told to cancel"
    after = Workflow("after_deadline", nodes=[Node("n", lambda ctx: "ok")])
    assert engine.submit(after).result(timeout=5).status == "completed"
    assert result.nodes["slow"]["status"] == "cancelled"
    assert result.results == {"quote": 1.0}
    assert [e["node_id"] for e in of_type(rec, eid, "node_completed")] == ["quote"]
    assert [(e["node_id"], e["reason"]) for e in of_type(rec, eid, "node_skipped")] == [
        ("trade", "cancelled")]
    terminal = of_type(rec, eid, "execution_failed")[0]
    assert terminal["error_type"] == "ExecutionTimeout"
    assert_terminal_last(rec, eid, "execution_failed")


def test_workflow_timeout_in_real_time(make_engine: EngineFactory) -> None:
    engine = make_engine()
    release = threading.Event()
    wf = Workflow("deadline_real", timeout_s=0.2, nodes=[
        Node("slow", lambda ctx: release.wait(10), timeout_s=30.0)])
    try:
        t0 = time.perf_counter()
        result = engine.submit(wf).result(timeout=5)
        elapsed = time.perf_counter() - t0
    finally:
        release.set()
    assert result.status == "failed" and result.error_type == "ExecutionTimeout"
    assert 0.195 <= elapsed <= 0.25, elapsed


# -- nothing after the terminal event, even when a node abandoned by it times out later ----

@pytest.mark.parametrize("ended_by", ["cancel", "workflow_timeout", "sibling_failed"])
def test_no_event_after_terminal_when_an_abandoned_node_times_out_later(
        make_engine: EngineFactory, ended_by: str) -> None:
    """Protocol: after an execution's terminal event no event of that execution is
    published. A node still stuck when its execution ended must not report its own
    timeout (node_failed / node_retrying) afterwards."""
    clock = ManualClock()
    engine = make_engine(clock=clock)
    rec = recorded(engine)
    release = threading.Event()
    calls = Calls()

    def stuck(ctx: NodeContext) -> str:
        calls.note(ctx)
        release.wait(10)  # deaf to ctx.cancelled
        return "late"

    def broken(ctx: NodeContext) -> None:
        raise ValueError("broken")

    go = threading.Event()
    nodes = [Node("stuck", stuck, category="provider", timeout_s=10.0, max_restarts=2,
                  backoff_min_s=0.0, backoff_max_s=0.0)]
    if ended_by == "sibling_failed":
        nodes.append(Node("gate", lambda ctx: go.wait(10), category="condition"))
        nodes.append(Node("broken", broken, depends_on=["gate"]))
    wf = Workflow(f"abandoned_{ended_by}", nodes=nodes,
                  timeout_s=5.0 if ended_by == "workflow_timeout" else None)
    try:
        handle = engine.submit(wf)
        eid = handle.execution_id
        rec.wait_for(lambda evs: any(e["type"] == "node_started" and e.get("node_id") == "stuck"
                                     and e.get("execution_id") == eid for e in evs))
        if ended_by == "cancel":
            engine.cancel(eid)
        elif ended_by == "workflow_timeout":
            clock.advance(5.0)
        else:
            go.set()
        result = handle.result(timeout=5)
        assert result.status in {"cancelled", "failed"}
        clock.advance(10.0)  # past the stuck node's own timeout_s
        barrier(engine)
        assert calls.count == 1
        assert_terminal_last(rec, eid, "execution_cancelled" if ended_by == "cancel"
                             else "execution_failed")
    finally:
        go.set()
        release.set()


# -- presets -------------------------------------------------------------------------------

def test_resilience_presets() -> None:
    dev = ResilienceConfig.development()
    assert (dev.max_restarts, dev.backoff_min_s, dev.backoff_max_s,
            dev.breaker_failure_threshold, dev.breaker_reset_timeout_s) == (2, 1.0, 60.0, 5, 60.0)
    for preset in (ResilienceConfig.staging(), ResilienceConfig.production()):
        assert (preset.max_restarts, preset.backoff_min_s, preset.backoff_max_s,
                preset.breaker_failure_threshold, preset.breaker_reset_timeout_s) == (
            3, 1.0, 120.0, 10, 120.0)
    # The defaults are the section-4 values.
    default = ResilienceConfig()
    assert (default.timeout_s, default.max_restarts, default.restart_within_s,
            default.backoff_min_s, default.backoff_max_s, default.breaker_failure_threshold,
            default.breaker_reset_timeout_s) == (30.0, 2, 60.0, 1.0, 60.0, 5, 60.0)


def test_preset_in_config_from_dict() -> None:
    assert Config.from_dict({"resilience": {"preset": "staging"}}).resilience == \
        ResilienceConfig.staging()
    assert Config.from_dict({"resilience": {"preset": "development"}}).resilience == \
        ResilienceConfig.development()
    # Keys beside the preset override it.
    tuned = Config.from_dict({"resilience": {"preset": "production", "max_restarts": 1,
                                             "timeout_s": 5}}).resilience
    assert tuned.max_restarts == 1 and tuned.timeout_s == 5.0
    assert tuned.breaker_failure_threshold == 10 and tuned.backoff_max_s == 120.0
    with pytest.raises(ConfigError, match="preset"):
        Config.from_dict({"resilience": {"preset": "yolo"}})
    with pytest.raises(ConfigError, match=r"resilience\.max_retries"):
        Config.from_dict({"resilience": {"preset": "staging", "max_retries": 3}})


def test_staging_preset_drives_restarts_and_breakers(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine({"resilience": {"preset": "staging"}}, clock=clock)
    rec = recorded(engine)
    calls = Calls()

    def down(ctx: NodeContext) -> None:
        calls.note(ctx)
        raise ConnectionError("down")

    retried = Workflow("staging_restarts", nodes=[Node("quote", down, category="provider")])
    handle = engine.submit(retried)
    eid = handle.execution_id
    for n in (1, 2, 3):
        retrying = wait_count(rec, eid, "node_retrying", n)[-1]
        assert 1000.0 <= retrying["delay_ms"] <= 120_000.0
        clock.advance(retrying["delay_ms"] / 1000.0 + 0.001)
    result = handle.result(timeout=5)
    assert result.status == "failed" and calls.count == 4  # 3 restarts

    # Threshold 10: nine consecutive failures leave the breaker closed, the tenth opens it.
    once = Workflow("staging_breaker", nodes=[
        Node("quote", down, category="provider", breaker="venue", max_restarts=0)])
    for _ in range(9):
        assert engine.submit(once).result(timeout=5).error_type == "ConnectionError"
    assert engine.status()["breakers"] == {"venue": "closed"}
    engine.submit(once).result(timeout=5)
    assert engine.status()["breakers"] == {"venue": "open"}
    assert [e["failures"] for e in rec.of_type("circuit_opened")] == [10]
