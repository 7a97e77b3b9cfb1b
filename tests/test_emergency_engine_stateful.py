"""The kill switch through a real Engine as a state machine (Hypothesis stateful).

The public API (engine.halt / resume / alert / reduce_only / risk_update, ctx.risk in a
node, submit) and the EmergencyActor between it and the gate, with real actors and
threads, checked against the same `KillSwitchModel` as tests/test_emergency_stateful.py
(tests/emergency_model.py). Fewer examples: each starts an engine (in memory, no
data_dir). The clock is a ManualClock; after moving it, a round trip through the kill
switch's mailbox (`settle`) makes sure the stale-feed watchdog has looked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.clock import ManualClock
from actors.emergency import EmergencyState
from actors.errors import LimitExceeded
from tests.conftest import Recorder
from tests.emergency_model import (
    LIMITS,
    WARN_AT,
    KillSwitchModel,
    assert_history,
    assert_limits,
    assert_owed_events,
    figures,
    sane_figures,
)

State = EmergencyState

#: A limit no rule reports to but `settle`: a round trip through the kill switch's mailbox.
BARRIER = {"name": "barrier", "kind": "custom", "threshold": 1.0, "auto_halt": False}
ENGINE_CONFIG = {"emergency": {"warn_at": WARN_AT, "limits": [
    *({"name": c.name, "kind": c.kind, "threshold": c.threshold, "auto_halt": c.auto_halt,
       **({} if c.stale_after_s is None else {"stale_after_s": c.stale_after_s})}
      for c in LIMITS),
    BARRIER]}}
EMERGENCY_TYPES = {"emergency_state_changed", "risk_limit_warning", "risk_limit_exceeded"}
WAIT_S = 10.0


class EngineKillSwitchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.engine = Engine.start(Config.from_dict(ENGINE_CONFIG), clock=self.clock)
        self.rec = Recorder().follow(self.engine)
        self.model = KillSwitchModel(self.clock.monotonic())
        self.seen = 0  # emergency events already checked
        self.ran: list[str] = []  # node functions entered, in order

    def teardown(self) -> None:
        self.engine.stop(timeout=5.0)

    def operator(self, call: Callable[[], dict[str, Any]], new: EmergencyState, reason: str,
                 origin: str, force: bool) -> None:
        before = self.model.state
        if not self.model.operator(new, reason, origin, force=force):
            with pytest.raises(LimitExceeded):
                call()
            return
        assert call() == {"state": new.value, "previous_state": before.value}

    @rule(origin=st.sampled_from(["api", "cli"]))
    def halt(self, origin: str) -> None:
        self.operator(lambda: self.engine.halt("stop", origin=origin), State.HALT, "stop", origin,
                      False)

    @rule(force=st.booleans())
    def resume(self, force: bool) -> None:
        self.operator(lambda: self.engine.resume("clear", force=force), State.NORMAL, "clear",
                      "api", force)

    @rule(force=st.booleans())
    def alert(self, force: bool) -> None:
        self.operator(lambda: self.engine.alert("watch", force=force), State.ALERT, "watch", "api",
                      force)

    @rule()
    def reduce_only(self) -> None:
        self.operator(lambda: self.engine.reduce_only("close"), State.REDUCE_ONLY, "close", "api",
                      False)

    @rule(name=st.sampled_from([c.name for c in LIMITS]), as_delta=st.booleans(),
          figure=figures)
    def report_figure(self, name: str, as_delta: bool, figure: Any) -> None:
        before_state, before_stats = self.model.state, self.engine.gate.book.stats()
        refused = self.model.figure(name, figure, as_delta=as_delta,
                                    now=self.clock.monotonic())

        def call() -> dict[str, Any]:
            if as_delta:
                return self.engine.risk_update(name, delta=figure)
            return self.engine.risk_update(name, value=figure)

        if refused is not None:
            with pytest.raises(refused):
                call()
            assert self.engine.gate.book.stats() == before_stats
            assert self.engine.state is before_state
            return
        reply = call()
        assert (reply["limit"], reply["value"]) == (name, self.model.limits[name].value)
        assert before_state is not State.HALT or self.engine.state is State.HALT

    @rule(seconds=st.floats(0.0, 25.0, allow_nan=False, allow_infinity=False))
    def time_passes(self, seconds: float) -> None:
        before = self.model.state
        self.clock.advance(seconds)  # tells the kill switch's mailbox to look (a Tick)
        self.engine.risk_update("barrier", value=0.0)  # ... and it has looked
        self.model.watchdog(self.clock.monotonic())
        assert before is not State.HALT or self.engine.state is State.HALT

    @rule(reduces_risk=st.booleans(),
          report=st.none() | st.just(("position", 150.0))  # the node itself halts
          | st.tuples(st.sampled_from([c.name for c in LIMITS]), sane_figures))
    def run_a_workflow(self, reduces_risk: bool,
                       report: tuple[str, float] | None) -> None:
        """A provider (that may report a figure through ctx.risk), then an action."""
        def quote(ctx: NodeContext) -> float:
            self.ran.append("quote")
            if report is not None:
                ctx.risk(report[0], value=report[1])
            return 1.0

        def order(ctx: NodeContext) -> str:
            self.ran.append("order")
            return "placed"

        workflow = Workflow("trade", nodes=[
            Node("quote", quote, category="provider"),
            Node("order", order, category="action", depends_on=["quote"],
                 reduces_risk=reduces_risk)])
        self.ran.clear()
        result = self.engine.submit(workflow).result(timeout=WAIT_S)
        if self.model.state is State.HALT:
            assert (result.status, self.ran) == ("refused", [])
            event("workflow refused in HALT")
            return
        if report is not None:
            assert self.model.figure(report[0], report[1], as_delta=False,
                                     now=self.clock.monotonic()) is None
        refusal_ = self.model.admits("action", reduces_risk=reduces_risk, exempt=False)
        expected = {None: ("completed", ["quote", "order"]),
                    "reduce_only": ("completed", ["quote"]),
                    "halted": ("halted", ["quote"])}[refusal_]
        assert (result.status, self.ran) == expected, (self.model.state, reduces_risk, report)
        skipped = [e["reason"] for e in self.rec.for_execution(result.execution_id)
                   if e["type"] == "node_skipped"]
        assert skipped == ([] if refusal_ is None else [refusal_])  # the order node's
        event(f"workflow {result.status}, ran {'+'.join(self.ran)}")

    @invariant()
    def state_is_the_models(self) -> None:
        assert self.engine.state is self.model.state
        status = self.engine.status()
        assert status["state"] == self.model.state.value
        for name, m in self.model.limits.items():
            assert status["limits"][name]["value"] == m.value

    @invariant()
    def limits_are_the_models(self) -> None:
        assert_limits(self.engine.gate.book, self.model)

    @invariant()
    def each_change_published_exactly_one_event(self) -> None:
        events = [e for e in self.rec.events if e["type"] in EMERGENCY_TYPES]
        new, self.seen = events[self.seen:], len(events)
        assert_owed_events(new, self.model)
        assert_history(self.engine.emergency_history(), self.model, events)


EngineKillSwitchMachine.TestCase.settings = settings(
    max_examples=100, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestEngineKillSwitchStateful = EngineKillSwitchMachine.TestCase
