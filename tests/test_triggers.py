"""Interval triggers on an injected clock: no drift, no pile-up, a stall skips and counts."""

from __future__ import annotations

from typing import Any

from actors.config import WorkflowEntry
from actors.execution import ExecutionHandle, ExecutionResult
from actors.triggers import IntervalTriggers
from actors.workflow import Node, Workflow
from tests.engine_journal_helpers import captured_logs

WF = Workflow("tick", nodes=[Node("n", lambda ctx: None)])


class FakeClock:
    """Time moves only when the trigger loop waits (or a submit "takes" time)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stop_after: float = 1e9

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += seconds
        return self.now > self.stop_after


def handle(done: bool) -> ExecutionHandle:
    h = ExecutionHandle("exec_tick_00000001", "tick")
    if done:
        h.resolve(ExecutionResult(execution_id=h.execution_id, workflow_id="tick",
                                  status="completed"), 0)
    return h


def run(clock: FakeClock, submit: Any, every_s: float = 1.0) -> IntervalTriggers:
    entry = WorkflowEntry(ref="x:WF", every_s=every_s, workflow=WF)
    triggers = IntervalTriggers([entry], submit, monotonic=clock.monotonic, wait=clock.wait)
    triggers.run()
    return triggers


def test_runs_are_due_at_start_plus_n_periods_whatever_a_submit_costs() -> None:
    clock = FakeClock()
    clock.stop_after = 105.5
    at: list[float] = []

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        at.append(clock.now)
        clock.now += 0.3  # a slow submit must not push the next run later
        return handle(done=True)

    triggers = run(clock, submit)
    assert at == [101.0, 102.0, 103.0, 104.0, 105.0]
    assert triggers.stats()["tick"] == {"submitted": 5, "skipped": 0, "refused": 0}


def test_a_run_still_going_skips_its_turn_and_is_counted() -> None:
    clock = FakeClock()
    clock.stop_after = 104.5
    calls: list[float] = []
    first = handle(done=False)  # never ends

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        calls.append(clock.now)
        return first

    triggers = run(clock, submit)
    assert calls == [101.0]
    assert triggers.stats()["tick"] == {"submitted": 1, "skipped": 3, "refused": 0}


def test_a_stall_over_several_periods_runs_once_and_counts_the_rest() -> None:
    clock = FakeClock()
    clock.stop_after = 106.5
    at: list[float] = []

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        at.append(clock.now)
        if len(at) == 1:
            clock.now += 3.5  # the process stalled for three and a half periods
        return handle(done=True)

    triggers = run(clock, submit)
    assert at == [101.0, 105.0, 106.0]
    assert triggers.stats()["tick"] == {"submitted": 3, "skipped": 3, "refused": 0}


def test_a_refused_submit_is_counted_and_the_next_period_tries_again() -> None:
    clock = FakeClock()
    clock.stop_after = 103.5

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        h = ExecutionHandle("exec_tick_00000002", "tick")
        h.resolve(ExecutionResult(execution_id=h.execution_id, workflow_id="tick",
                                  status="refused", error="halted", error_type="Halted"), 0)
        return h

    triggers = run(clock, submit)
    assert triggers.stats()["tick"] == {"submitted": 0, "skipped": 0, "refused": 3}


def test_a_run_of_refusals_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    """A halted daemon refuses every period: one line says so (and why), one says when
    submits are accepted again, instead of silence (or a line a period)."""
    clock = FakeClock()
    clock.stop_after = 106.5
    refusing = {102.0, 103.0, 104.0}

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        if clock.now not in refusing:
            return handle(done=True)
        h = ExecutionHandle("exec_tick_00000003", "tick")
        h.resolve(ExecutionResult(execution_id=h.execution_id, workflow_id="tick",
                                  status="refused", error="HALT: desk closed",
                                  error_type="Halted"), 0)
        return h

    with captured_logs() as logs:
        triggers = run(clock, submit)
    assert triggers.stats()["tick"] == {"submitted": 3, "skipped": 0, "refused": 3}
    lines = [(line["event"], line.get("error_type")) for line in logs
             if line["event"].startswith("trigger_")]
    assert lines == [("trigger_refused", "Halted"), ("trigger_accepted_again", None)]


def test_a_clock_jump_while_waiting_runs_once_not_a_burst_of_catch_up_runs() -> None:
    clock = FakeClock()
    clock.stop_after = 100.0 + 5 * 3600 + 5.5
    at: list[float] = []
    wait = clock.wait

    def suspended_once(seconds: float) -> bool:
        if len(at) == 2 and clock.now < 1000.0:
            clock.now += 5 * 3600  # suspended for five hours (a monotonic clock jumps)
        return wait(seconds)

    def submit(wf: str, bot: str | None, strategy: str | None) -> ExecutionHandle:
        at.append(clock.now)
        return handle(done=True)

    entry = WorkflowEntry(ref="x:WF", every_s=1.0, workflow=WF)
    triggers = IntervalTriggers([entry], submit, monotonic=clock.monotonic,
                                wait=suspended_once)
    triggers.run()
    # Due at 103, woken five hours on: one run then, the 18,000 turns missed are counted
    # as skipped, and the schedule goes on from there.
    assert at == [101.0, 102.0, 18103.0, 18104.0, 18105.0]
    assert triggers.stats()["tick"] == {"submitted": 5, "skipped": 18000, "refused": 0}


def test_an_engine_started_with_a_config_runs_its_interval_triggers_until_stopped() -> None:
    # `Engine.start(config)` honours the config's `every_s` as the daemon does (it once
    # ignored it in-process: the config parsed, the schedule never ran).
    import threading

    from actors import Config, Engine
    from tests.conftest import Recorder

    entry = WorkflowEntry(ref="x:WF", every_s=0.02, bot_id="bot_tick", workflow=WF)
    engine = Engine.start(Config(workflows=(entry,)))
    try:
        recorder = Recorder().follow(engine, types={"execution_completed"})
        recorder.wait_for(lambda events: len(events) >= 3)
        assert {e["bot_id"] for e in recorder.events} == {"bot_tick"}
    finally:
        engine.stop()
    assert engine.triggers.stats()["tick"]["submitted"] >= 3
    assert "tradeloom-triggers" not in {t.name for t in threading.enumerate()}
