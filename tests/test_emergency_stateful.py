"""The kill switch's gate as a state machine (Hypothesis stateful), against a model.

`EmergencyGate` and its `RiskBook` (actors/emergency.py, actors/risk.py) are driven
directly, with a ManualClock and a sink that records what it sequences: no actor, no
thread. Each rule does what the EmergencyActor does for one message (a state change, a
risk figure, the stale-feed watchdog's Tick after the clock moved) or what a node on its
way to start does (`admit`). `KillSwitchModel` (tests/emergency_model.py, written from
CONTRACT sections 7 and 8) predicts every answer, state, limit figure and event; the same
model drives a real Engine in tests/test_emergency_engine_stateful.py.
"""

from __future__ import annotations

import math
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.clock import ManualClock
from actors.emergency import EmergencyGate, EmergencyState
from actors.errors import LimitExceeded, NotFound
from actors.events import Event
from actors.messages import RiskUpdate
from actors.risk import RiskBook
from tests.conftest import RecordingSink
from tests.emergency_model import (
    ALERT,
    HALT,
    LIMITS,
    NORMAL,
    REDUCE_ONLY,
    WARN_AT,
    KillSwitchModel,
    Mentions,
    assert_history,
    assert_limits,
    assert_owed_events,
    figures,
    sane_figures,
)


def fake_run(category: str, *, reduces_risk: bool, exempt: bool) -> Any:
    """What EmergencyGate.admit reads of a NodeRun (as tests/test_kill_switch.py)."""
    return SimpleNamespace(
        node=SimpleNamespace(category=category, reduces_risk=reduces_risk),
        execution=SimpleNamespace(closed=False, exempt_from_halt=exempt),
        abandoned=False, started=False, started_at=0.0, cancelled=threading.Event())


def node_started(category: str) -> Event:
    head = {"v": 1, "execution_id": "exec_wf_0000000a", "correlation_id": "exec_wf_0000000a",
            "workflow_id": "wf", "bot_id": None, "strategy_id": None}
    return {**head, "type": "node_started", "node_id": "n", "node_name": "n",
            "node_category": category, "attempt": 1}


class KillSwitchMachine(RuleBasedStateMachine):
    """The gate and its risk book, called as the EmergencyActor and the node actors do."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.sink = RecordingSink(self.clock)
        self.gate = EmergencyGate(self.sink, RiskBook(LIMITS, warn_at=WARN_AT,
                                                      clock=self.clock), self.clock)
        #: (state in the snapshot, last seq sequenced) at each persist() call
        self.persisted: list[tuple[str, int]] = []
        self.gate.persist = self._persist
        self.model = KillSwitchModel(self.clock.monotonic())
        self.seen = 0  # events already checked

    def _persist(self) -> None:
        self.persisted.append((self.gate.snapshot(history=False)["state"],
                               self.sink.last_seq))

    def operator(self, new: EmergencyState, reason: str, origin: str, force: bool) -> None:
        """An operator's change, as the EmergencyActor makes it (source "manual")."""
        before = self.model.state
        persisted = len(self.persisted)
        blocking = self.model.blocking()
        if not self.model.operator(new, reason, origin, force=force):
            with pytest.raises(LimitExceeded) as caught:
                self.gate.transition(new, reason, "manual", origin, force=force)
            for name in blocking:
                assert name in str(caught.value)
            assert len(self.persisted) == persisted
            return
        previous, changed = self.gate.transition(new, reason, "manual", origin, force=force)
        assert (previous, changed) == (before, new is not before)
        if changed:  # persisted before its event was sequenced
            assert self.persisted[persisted:] == [(new.value, self.sink.last_seq - 1)]

    # -- rules: the operator ------------------------------------------------------------------

    @rule(reason=st.sampled_from(["manual stop", "exchange down", "ünïcode ✓"]),
          origin=st.sampled_from(["api", "control", "cli", "web"]))
    def halt(self, reason: str, origin: str) -> None:
        self.operator(HALT, reason, origin, force=False)

    @rule(force=st.booleans(), origin=st.sampled_from(["api", "control"]))
    def resume(self, force: bool, origin: str) -> None:
        self.operator(NORMAL, "all clear", origin, force=force)

    @rule(force=st.booleans())
    def alert(self, force: bool) -> None:
        self.operator(ALERT, "watch it", "api", force=force)

    @rule()
    def reduce_only(self) -> None:
        self.operator(REDUCE_ONLY, "close positions", "api", force=False)

    # -- rules: risk figures ------------------------------------------------------------------

    @rule(name=st.sampled_from([c.name for c in LIMITS]), as_delta=st.booleans(),
          figure=figures)
    def report_figure(self, name: str, as_delta: bool, figure: Any) -> None:
        before_state, before_stats = self.model.state, self.gate.book.stats()
        persisted = len(self.persisted)
        update = (RiskUpdate(limit=name, delta=figure) if as_delta
                  else RiskUpdate(limit=name, value=figure))
        refused = self.model.figure(name, figure, as_delta=as_delta,
                                    now=self.clock.monotonic())
        if refused is not None:
            with pytest.raises(refused):
                self.gate.update_risk(update)
            # refused: not the figure, not a flag, not the staleness, not the state
            assert self.gate.book.stats() == before_stats
            assert self.gate.state is before_state
            assert len(self.persisted) == persisted
            return
        verdict, halt_reason = self.gate.update_risk(update)
        limit = self.model.limits[name]
        assert verdict.breach is (limit.exceeded and limit.auto_halt)
        if self.model.state is not before_state:
            assert halt_reason == Mentions(name)
        else:
            assert halt_reason is None
        # HALT is left only by an operator: never by a figure, however low
        assert before_state is not HALT or self.gate.state is HALT
        assert len(self.persisted) == persisted + 1 + (self.model.state is not before_state)
        assert self.persisted[-1][0] == self.model.state.value  # limit values persisted too

    @rule(name=st.sampled_from([c.name for c in LIMITS]),
          huge=st.sampled_from([1e308, 1.7976931348623157e308]), sign=st.sampled_from([1, -1]))
    def push_a_figure_past_the_float_range(self, name: str, huge: float, sign: int) -> None:
        """A huge figure is still a figure; a delta on it that overflows is refused."""
        self.report_figure(name, False, sign * huge)
        self.report_figure(name, True, sign * huge)

    @rule(figure=sane_figures)
    def report_to_an_unknown_limit(self, figure: float) -> None:
        before_stats = self.gate.book.stats()
        with pytest.raises(NotFound):
            self.gate.update_risk(RiskUpdate(limit="no_such_limit", value=figure))
        assert self.gate.book.stats() == before_stats

    # -- rules: time and the stale-feed watchdog --------------------------------------------

    def watchdog(self) -> None:
        """The EmergencyActor's Tick after an advance: `check_stale`."""
        before = self.model.state
        expected = self.model.watchdog(self.clock.monotonic())
        assert self.gate.check_stale() == expected
        assert before is not HALT or self.gate.state is HALT

    @rule(seconds=st.floats(0.0, 25.0, allow_nan=False, allow_infinity=False))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.watchdog()

    @rule(early=st.booleans())
    def time_passes_to_a_stale_deadline(self, early: bool) -> None:
        """Exactly to the next feed's deadline, or to just before it (float-exact edges)."""
        left = self.model.next_stale_deadline() - self.clock.monotonic()
        if early:
            left = math.nextafter(left, -math.inf)
        if left >= 0:
            self.clock.advance(left)
        self.watchdog()

    # -- rules: nodes on their way to start ---------------------------------------------------

    @rule(category=st.sampled_from(["action", "provider", "condition", "transform"]),
          reduces_risk=st.booleans(),
          exempt=st.integers(0, 4).map(lambda n: n == 0))  # an on-halt hook's node, now and then
    def admit_a_node(self, category: str, reduces_risk: bool, exempt: bool) -> None:
        run = fake_run(category, reduces_risk=reduces_risk, exempt=exempt)
        state = self.model.state
        expected = self.model.admits(category, reduces_risk=reduces_risk, exempt=exempt)
        verdict = self.gate.admit(run, node_started(category))
        assert verdict == expected, (state, category, reduces_risk, exempt)
        assert run.started is (expected is None)
        if expected is None:
            self.model.expected.append({"type": "node_started", "node_category": category,
                                        "state": state.value})
            if category == "action":
                assert self.gate.starting == 1
                self.gate.action_begun()
        event(f"{category} in {state.value}: {verdict or 'admitted'}")

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def state_is_the_models(self) -> None:
        gate, model = self.gate, self.model
        assert gate.state is model.state
        assert self.sink.state == model.state.value  # stamped on workflow events
        last = model.last_change
        if last is not None:
            assert (gate.reason, gate.source, gate.origin) == (
                last["reason"], last["source"], last["origin"])
        assert gate.starting == 0

    @invariant()
    def limits_are_the_models(self) -> None:
        assert_limits(self.gate.book, self.model)

    @invariant()
    def each_change_emitted_exactly_one_event(self) -> None:
        new = self.sink.recorded[self.seen:]
        self.seen = len(self.sink.recorded)
        assert_owed_events(new, self.model)
        assert_history(list(self.gate.history), self.model, self.sink.recorded)


KillSwitchMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestKillSwitchStateful = KillSwitchMachine.TestCase
