"""An operator trying to break the engine: odd settings and odd calls that were found to
hang it, kill one of its actors, or report work as done that never ran.

Real engines (the `make_engine` fixture); every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from actors import (
    Config,
    ConfigError,
    DaemonConfig,
    Engine,
    EngineStopped,
    ExecutionHandle,
    LimitExceeded,
    ManualClock,
    Node,
    NodeContext,
    Workflow,
    WorkflowDefinitionError,
)
from actors.cli import build_parser
from actors.config import WorkflowEntry
from actors.triggers import IntervalTriggers
from actors.webhook import WebhookManager
from tests.conftest import EngineFactory, Recorder

WAIT_S = 10.0
#: "Never", as an operator writes it: far past what a thread's wait can take (about 292
#: years on Linux, `threading.TIMEOUT_MAX`).
NEVER_S = 1e12


def assert_usable(engine: Engine) -> None:
    """Runs a workflow, and the kill switch answers a halt and a resume."""
    wf = Workflow("still_usable", nodes=[Node("one", lambda ctx: 1)])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"one": 1})
    engine.halt("usable?")
    engine.resume("usable")
    assert engine.state.value == "NORMAL"


# -- deadlines far off ---------------------------------------------------------------------

def test_a_node_timeout_meaning_never_leaves_the_supervisor_running(
        make_engine: EngineFactory) -> None:
    """The supervisor's inbox waited for the next timer's full delay: a node or workflow
    `timeout_s` of 1e12 overflowed that wait and killed the supervisor's thread, so the
    execution (and every later one) hung."""
    engine = make_engine()
    wf = Workflow("never", nodes=[Node("n", lambda ctx: 1, timeout_s=NEVER_S)],
                  timeout_s=NEVER_S)
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, dict(result.results)) == ("completed", {"n": 1})
    assert_usable(engine)


def test_config_deadlines_meaning_never_leave_every_actor_running(
        make_engine: EngineFactory) -> None:
    """The same from the config: `[resilience] timeout_s` and a limit's `stale_after_s`
    (the kill switch's own watchdog wait: its actor died, and `halt()` with it)."""
    engine = make_engine({
        "resilience": {"timeout_s": NEVER_S, "restart_within_s": NEVER_S,
                       "breaker_reset_timeout_s": NEVER_S},
        "emergency": {"limits": [{"name": "pnl", "kind": "custom", "threshold": 100.0,
                                  "stale_after_s": NEVER_S}]}})
    assert_usable(engine)
    engine.risk_update("pnl", value=1.0)
    assert engine.status()["limits"]["pnl"]["value"] == 1.0


# -- result(timeout=...) -------------------------------------------------------------------

def submit_gated(engine: Engine) -> tuple[ExecutionHandle, threading.Event]:
    """An execution whose one node has started and returns "done" once the event is set."""
    started = threading.Event()
    release = threading.Event()

    def gated(ctx: NodeContext) -> str:
        started.set()
        release.wait(WAIT_S)
        return "done"

    handle = engine.submit(Workflow("gated", nodes=[Node("n", gated)]))
    assert started.wait(WAIT_S)
    return handle, release


@pytest.mark.parametrize("timeout", [math.inf, 1e12], ids=["inf", "1e12"])
def test_result_with_an_endless_timeout_waits_for_the_result(
        make_engine: EngineFactory, timeout: float) -> None:
    """`result(timeout=math.inf)` raised `OverflowError` at once, the execution running."""
    engine = make_engine()
    handle, release = submit_gated(engine)
    outcome: list[Any] = []
    waiter = threading.Thread(target=lambda: outcome.append(handle.result(timeout=timeout)),
                              daemon=True)
    waiter.start()
    release.set()
    waiter.join(WAIT_S)
    assert not waiter.is_alive()
    assert [(r.status, dict(r.results)) for r in outcome] == [("completed", {"n": "done"})]


def test_result_with_a_nan_timeout_is_refused_naming_it(make_engine: EngineFactory) -> None:
    engine = make_engine()
    release = threading.Event()
    handle = engine.submit(Workflow("held", nodes=[Node("n", lambda ctx: release.wait(WAIT_S))]))
    with pytest.raises(ValueError, match="timeout"):
        handle.result(timeout=math.nan)
    release.set()
    assert handle.result(timeout=WAIT_S).status == "completed"


# -- async def nodes -----------------------------------------------------------------------

async def _async_order(ctx: NodeContext) -> str:
    return "placed"


async def _async_gen(ctx: NodeContext) -> Any:
    yield 1


class _AsyncCallable:
    async def __call__(self, ctx: NodeContext) -> str:
        return "placed"


@pytest.mark.parametrize("fn", [_async_order, _async_gen, functools.partial(_async_order),
                                _AsyncCallable()],
                         ids=["async def", "async generator", "partial", "async __call__"])
def test_an_async_node_function_is_a_definition_error_naming_the_node(fn: Any) -> None:
    """An `async def` node returned a coroutine that nothing awaited: the node "completed"
    with the coroutine as its output, and an action's order was never placed."""
    with pytest.raises(WorkflowDefinitionError, match=r"'order'.*async") as caught:
        Node("order", fn, category="action")
    assert caught.value.node_id == "order"


@pytest.mark.parametrize("category", ["provider", "condition", "action", "transform"])
def test_a_node_returning_a_coroutine_fails_and_the_coroutine_is_closed(
        make_engine: EngineFactory, category: str) -> None:
    """A plain function that returns a coroutine (an async helper called without await)."""
    engine = make_engine()
    rec = Recorder().follow(engine)
    made: list[Any] = []

    def forgot_await(ctx: NodeContext) -> Any:
        coro = _async_order(ctx)
        made.append(coro)
        return coro

    wf = Workflow(f"forgot_{category}", nodes=[
        Node("n", forgot_await, category=category),
        Node("after", lambda ctx: "after", depends_on=["n"])])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert (result.status, result.error_type) == ("failed", "CoroutineReturned")
    assert "'n'" in (result.error or "") and "coroutine" in (result.error or "")
    assert "after" not in result.results
    (failed,) = [e for e in rec.for_execution(result.execution_id) if e["type"] == "node_failed"]
    assert failed["error_type"] == "CoroutineReturned"
    # Closed, so no "coroutine ... was never awaited" warning when it is collected.
    assert made[0].cr_frame is None
    assert_usable(engine)


# -- engine.stop(timeout=...) and the manual clock -----------------------------------------

def test_stop_with_an_endless_timeout_stops_every_actor(make_engine: EngineFactory) -> None:
    """`stop(timeout=math.inf)` raised `OverflowError` after marking the engine stopped:
    its actors ran on, and a second `stop()` returned at once without stopping them."""
    engine = make_engine()
    assert engine.submit(Workflow("w", nodes=[Node("n", lambda ctx: 1)])).result(
        timeout=WAIT_S).status == "completed"
    engine.stop(timeout=math.inf)
    assert not engine.ref.is_alive()


def test_stop_with_a_nan_timeout_is_refused_and_a_later_stop_works(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    with pytest.raises(ValueError, match="timeout"):
        engine.stop(timeout=math.nan)
    assert engine.ref.is_alive()  # refused before anything was stopped
    engine.stop(timeout=WAIT_S)
    assert not engine.ref.is_alive()


@pytest.mark.parametrize("seconds", [math.nan, math.inf, -1.0], ids=["nan", "inf", "-1"])
def test_a_manual_clock_refuses_a_non_finite_step(make_engine: EngineFactory,
                                                  seconds: float) -> None:
    """`advance(nan)` made every later deadline NaN: the kill switch's watchdog then failed
    on each tick, and a stale feed was never reported."""
    clock = ManualClock()
    engine = make_engine({"emergency": {"limits": [
        {"name": "feed", "kind": "custom", "threshold": 10.0, "stale_after_s": 5.0,
         "auto_halt": False}]}}, clock=clock)
    with pytest.raises(ValueError, match="clock"):
        clock.advance(seconds)
    rec = Recorder().follow(engine)
    clock.advance(6.0)
    rec.wait_type("emergency_state_changed")
    assert engine.state.value == "ALERT"


def test_wait_idle_with_a_grace_meaning_never_waits_for_the_running_execution(
        make_engine: EngineFactory) -> None:
    """The daemon's shutdown waits `engine.wait_idle(shutdown_grace_s)`: a grace of 1e12
    raised `OverflowError` while anything ran, and the daemon never closed its engine."""
    engine = make_engine()
    handle, release = submit_gated(engine)
    idle: list[Any] = []
    waiter = threading.Thread(target=lambda: idle.append(engine.wait_idle(NEVER_S)),
                              daemon=True)
    waiter.start()
    release.set()
    waiter.join(WAIT_S)
    assert idle == [True]
    assert handle.result(timeout=WAIT_S).status == "completed"


def test_an_interval_trigger_meaning_never_waits_in_steps_a_thread_can_take() -> None:
    """`[[workflows]] every_s = 1e12` made the trigger thread wait 1e12 s at once: an
    `OverflowError` that killed the one thread serving every trigger."""
    waits: list[float] = []

    def wait(seconds: float) -> bool:
        waits.append(seconds)
        return True  # stopped: one wait is enough to look at

    entry = WorkflowEntry(ref="m:wf", every_s=NEVER_S,
                          workflow=Workflow("rare", nodes=[Node("n", lambda ctx: 1)]))
    triggers = IntervalTriggers([entry], lambda *args: pytest.fail("nothing is due"),
                                monotonic=lambda: 0.0, wait=wait)
    triggers.run()
    assert len(waits) == 1 and 0 < waits[0] < threading.TIMEOUT_MAX


# -- the kill switch raced from many threads -----------------------------------------------

def test_state_changes_raced_from_many_threads_keep_one_consistent_story(
        make_engine: EngineFactory) -> None:
    """Eight threads call halt/resume/alert/reduce_only (forced or not) and push an
    `auto_halt` limit over and under its threshold, while actions run. Whatever the
    interleaving: each call either applies or is refused with `LimitExceeded`; the
    published changes form one chain (each `previous_state` is the state before it) that
    ends in the engine's state and agrees with `emergency_history()`; and no action started
    in HALT, nor a plain one in REDUCE_ONLY."""
    engine = make_engine({"emergency": {"limits": [
        {"name": "loss", "kind": "daily_loss", "threshold": 100.0}]}})
    rec = Recorder().follow(engine)
    stop_work = threading.Event()
    unexpected: list[BaseException] = []

    def operator(seed: int) -> None:
        rng = random.Random(seed)
        calls = [
            lambda: engine.halt(f"h{seed}"),
            lambda: engine.resume(f"r{seed}"),
            lambda: engine.resume(f"rf{seed}", force=True),
            lambda: engine.alert(f"a{seed}"),
            lambda: engine.alert(f"af{seed}", force=True),
            lambda: engine.reduce_only(f"ro{seed}"),
            lambda: engine.risk_update("loss", value=rng.choice([0.0, 50.0, 99.0, 150.0])),
        ]
        try:
            for _ in range(40):
                with contextlib.suppress(LimitExceeded):
                    rng.choice(calls)()
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            unexpected.append(exc)

    def trader() -> None:
        wf = Workflow("trade", nodes=[
            Node("plain", lambda ctx: 1, category="action"),
            Node("reducing", lambda ctx: 2, category="action", reduces_risk=True)])
        while not stop_work.is_set():
            engine.submit(wf).result(timeout=WAIT_S)

    threads = [threading.Thread(target=operator, args=(seed,), daemon=True)
               for seed in range(8)]
    workers = [threading.Thread(target=trader, daemon=True) for _ in range(2)]
    for thread in threads + workers:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    stop_work.set()
    for thread in workers:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    assert unexpected == []

    events = rec.events
    changes = [e for e in events if e["type"] == "emergency_state_changed"]
    assert changes
    for before, after in itertools.pairwise(changes):
        assert after["previous_state"] == before["state"], (before, after)
    assert changes[-1]["state"] == engine.state.value == engine.status()["state"]
    history = engine.emergency_history()
    assert [(h["state"], h["seq"]) for h in history[-len(changes):]] == [
        (e["state"], e["seq"]) for e in changes]
    for event in events:
        if event["type"] == "node_started" and event["node_category"] == "action":
            assert event["state"] != "HALT", event
            if event["state"] == "REDUCE_ONLY":
                assert event["node_id"] == "reducing", event


# -- config --------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value"), [
    ("gc_threshold", [2 ** 70]), ("gc_threshold", [50000, 2 ** 31]),
    ("cpu_affinity", [-1]), ("cpu_affinity", [2 ** 70])])
def test_daemon_integer_lists_out_of_range_are_one_line_naming_the_key(
        key: str, value: list[int]) -> None:
    """Accepted before: at start, `gc.set_threshold` / `os.sched_setaffinity` raised an
    `OverflowError` (a traceback, not the one line naming the key)."""
    with pytest.raises(ConfigError, match=rf"daemon\.{key}") as caught:
        Config.from_dict({"daemon": {key: value}})
    assert "\n" not in str(caught.value)


def test_a_hand_built_config_with_a_huge_cpu_id_is_a_config_error() -> None:
    """`Engine.start` turned OSError and ValueError into a ConfigError, not OverflowError
    (now the Config itself refuses it, as the TOML loader does)."""
    with pytest.raises(ConfigError, match=r"daemon\.cpu_affinity"):
        config = dataclasses.replace(Config(), daemon=dataclasses.replace(
            DaemonConfig(), cpu_affinity=(2 ** 70,)))
        Engine.start(config).stop()


# -- submit --------------------------------------------------------------------------------

@pytest.mark.parametrize("priority", [2 ** 63, -(2 ** 63) - 1, 2 ** 70, 10 ** 5000],
                         ids=["2**63", "-2**63-1", "2**70", "10**5000"])
def test_a_priority_past_64_bits_is_refused_and_the_journal_keeps_working(
        make_engine: EngineFactory, tmp_path: Path, priority: int) -> None:
    """Accepted before: the journal could not store it, every later commit failed, and the
    engine halted for good (`journal_write_failed`) on one odd submit."""
    engine = make_engine({"daemon": {"data_dir": str(tmp_path / "data")}})
    wf = Workflow("prio", nodes=[Node("n", lambda ctx: 1)])
    with pytest.raises(ValueError, match="priority"):
        engine.submit(wf, priority=priority)
    for edge in (2 ** 63 - 1, -(2 ** 63)):
        assert engine.submit(wf, priority=edge).result(timeout=WAIT_S).status == "completed"
    assert engine.state.value == "NORMAL"
    assert len(engine.executions(workflow="prio")) == 2


# -- subscribe -----------------------------------------------------------------------------

@pytest.mark.parametrize(("filters", "error", "named"), [
    ({"types": {"node_complete"}}, ValueError, "'node_complete'"),
    ({"types": ["execution_completed", "execution_fail"]}, ValueError, "'execution_fail'"),
    ({"types": {1}}, ValueError, "1"),
    ({"workflow_id": 5}, TypeError, "workflow_id"),
])
def test_a_subscription_filter_that_can_match_nothing_is_refused(
        engine: Engine, filters: dict[str, Any], error: type[Exception], named: str) -> None:
    """Accepted before: a misspelt type (or an int workflow id) matched no event, so the
    callback was silently never called."""
    with pytest.raises(error, match=named):
        engine.subscribe(lambda event: None, **filters)


def test_a_subscription_may_filter_on_every_declared_type_given_as_any_iterable(
        engine: Engine) -> None:
    rec = Recorder().follow(engine, types=iter(["execution_completed", "gap"]),
                            workflow_id="typed")
    wf = Workflow("typed", nodes=[Node("n", lambda ctx: 1)])
    result = engine.submit(wf).result(timeout=WAIT_S)
    assert [e["type"] for e in rec.events] == ["execution_completed"]
    assert rec.events[0]["execution_id"] == result.execution_id


# -- webhooks ------------------------------------------------------------------------------

class WatchedEvent(threading.Event):
    """An Event that says when someone waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        self.waiting.set()
        return super().wait(timeout)


def test_a_webhook_backoff_meaning_never_waits_until_stopped(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    """A pause of 1e12 s (`backoff_max_s`) overflowed the deliverer's wait: an
    OverflowError each turn, so a down endpoint was retried every second, not backed off."""
    hook = {"name": "ops", "url": "http://127.0.0.1:9/", "secret": "s" * 32,
            "allow_private": True, "backoff_initial_s": NEVER_S, "backoff_max_s": NEVER_S}
    config = {"daemon": {"data_dir": str(tmp_path / "data")}, "webhooks": [hook]}
    engine = make_engine(config)
    assert engine.journal is not None
    manager = WebhookManager(Config.from_dict(config).webhooks, engine.journal, environ={})
    deliverer = manager.deliverers["ops"]
    deliverer._stopping = stopping = WatchedEvent()
    outcome: list[str] = []

    def pause() -> None:
        try:
            deliverer._sleep(NEVER_S)  # the wait between attempts itself
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(type(exc).__name__)

    waiter = threading.Thread(target=pause, daemon=True)
    waiter.start()
    assert stopping.waiting.wait(WAIT_S)  # the stop below finds it inside the wait
    assert deliverer.stop(WAIT_S)  # not started: only sets the stop flag
    waiter.join(WAIT_S)
    assert outcome == ["WebhookStopped"]
    manager.stop()


# -- tradeloom run -------------------------------------------------------------------------

@pytest.mark.parametrize("option", ["--every", "--timeout"])
@pytest.mark.parametrize("seconds", ["inf", "1e12", "nan", "-1", "0", "soon"])
def test_run_interval_options_out_of_range_are_a_usage_error(
        option: str, seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --every inf` (or 1e12) ran once, then failed with "unexpected OverflowError"
    (exit 1); `--every nan` did not wait at all. A bad argument is exit 2, one line."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["run", "examples.market_maker:workflow", option, seconds])
    assert exited.value.code == 2
    assert option in capsys.readouterr().err


def test_run_interval_options_take_finite_seconds() -> None:
    args = build_parser().parse_args(["run", "m:wf", "--every", "0.5", "--timeout", "1e6"])
    assert (args.every, args.timeout) == (0.5, 1e6)


# -- after stop() --------------------------------------------------------------------------

def test_cancel_and_subscribe_after_stop_raise_engine_stopped(
        make_engine: EngineFactory) -> None:
    """`cancel()` raised pykka's `ActorDeadError` (not a TradeloomError); `subscribe()`
    started a thread that lingered and could never be given an event."""
    engine = make_engine()
    handle = engine.submit(Workflow("w", nodes=[Node("n", lambda ctx: 1)]))
    assert handle.result(timeout=WAIT_S).status == "completed"
    engine.stop(timeout=WAIT_S)
    threads = threading.active_count()
    with pytest.raises(EngineStopped):
        engine.cancel("exec_unknown")
    with pytest.raises(EngineStopped):
        engine.subscribe(lambda event: None)
    assert threading.active_count() == threads
