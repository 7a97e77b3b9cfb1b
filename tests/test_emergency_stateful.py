"""The kill switch as a state machine (Hypothesis stateful), against a model.

`EmergencyGate` and its `RiskBook` (actors/emergency.py, actors/risk.py) are driven
directly, with a ManualClock and a sink that records what it sequences: no actor, no
thread. Each rule does what the EmergencyActor does for one message (a state change, a
risk figure, the stale-feed watchdog's Tick after the clock moved) or what a node on its
way to start does (`admit`). A model written from CONTRACT sections 7 and 8 predicts every
answer, state, limit figure and event:

- halt / resume / alert / reduce_only, each with `source: "manual"`; resume and alert are
  refused (`LimitExceeded`, nothing changes) while an auto_halt limit is exceeded, unless
  forced; reduce_only never is (it is how positions close), and may leave HALT.
- Risk figures (`value` or `delta`): NaN, infinities, bools, non-numbers and anything that
  would make the figure non-finite are refused and change nothing. Otherwise one
  `risk_limit_warning` per upward crossing of warn_at x threshold, one `risk_limit_exceeded`
  per crossing of the threshold, and HALT (`source: "risk_limit"`) for an auto_halt limit at
  or over its threshold.
- A limit fed nothing for `stale_after_s` raises the state to ALERT (HALT with auto_halt),
  `source: "stale_feed"`, never lowering it.
- HALT admits no node (but an on-halt hook's); REDUCE_ONLY admits actions only when they
  reduce risk (or belong to an on-halt hook).
- Every state change is exactly one `emergency_state_changed` event; none without a change.

Not modelled here: `action_rate` limits (their admission waits on a real timer),
`daily_loss` day rollover (tests/test_emergency_limits.py), equity/drawdown figures.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors.clock import ManualClock
from actors.config import LimitConfig
from actors.emergency import EmergencyGate, EmergencyState
from actors.errors import LimitExceeded, NotFound
from actors.events import Event, EventSink
from actors.messages import RiskUpdate
from actors.risk import RiskBook

HALT, NORMAL = EmergencyState.HALT, EmergencyState.NORMAL
ALERT, REDUCE_ONLY = EmergencyState.ALERT, EmergencyState.REDUCE_ONLY
RANK = {NORMAL: 0, ALERT: 1, REDUCE_ONLY: 2, HALT: 3}
WARN_AT = 0.8
LIMITS = (
    # auto_halt with a feed that must keep reporting: stale -> HALT
    LimitConfig(name="position", kind="position_size", threshold=100.0, auto_halt=True,
                stale_after_s=30.0),
    # no auto_halt: warns and flags, never halts; stale -> ALERT
    LimitConfig(name="score", kind="custom", threshold=10.0, auto_halt=False,
                stale_after_s=20.0),
    # auto_halt, never stale
    LimitConfig(name="exposure", kind="custom", threshold=1000.0, auto_halt=True),
)
CHANGE_FIELDS = ("state", "previous_state", "reason", "source", "origin")

# A figure a risk feed may send: plain numbers near the thresholds and their warn_at
# marks, exact edges, and the odd ones that must be refused without changing anything.
sane_figures = st.one_of(
    st.floats(-150.0, 1500.0, allow_nan=False, allow_infinity=False),
    st.integers(-150, 1500),
    st.sampled_from([0.0, -0.0, 7.999999999999999, 8.0, 10.0, 80.0, 99.99999999999999, 100.0,
                     800.0, 1000.0, 5e-324]),
    st.just(Fraction(1, 3)),
)
odd_figures = st.sampled_from([
    math.nan, -math.nan, math.inf, -math.inf, 10**400, -(10**400), True, False,
    1e308, -1e308, 1.7976931348623157e308, Decimal("5"), "5", None, [5.0], complex(5, 0),
])
figures = st.one_of(sane_figures, odd_figures)


class RecordingSink(EventSink):
    """An EventSink that also keeps every event it sequences, in order (no thread)."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.recorded: list[Event] = []

    def emit_locked(self, events: list[Event]) -> None:
        super().emit_locked(events)
        self.recorded.extend(events)


@dataclass(frozen=True)
class LimitModel:
    name: str
    threshold: float
    auto_halt: bool
    stale_after_s: float | None
    value: float = 0.0
    warned: bool = False
    exceeded: bool = False
    fed_at: float = 0.0
    stale: bool = False


def refusal(figure: object, current: float, as_delta: bool) -> type[Exception] | float:
    """The model's reading of a figure: the exception it must raise, or the new value."""
    if figure is None:  # no figure at all: "give exactly one of value, delta, equity"
        return ValueError
    if isinstance(figure, bool) or not isinstance(figure, (int, float, Fraction)):
        return TypeError
    try:
        number = float(figure)
    except OverflowError:
        return ValueError
    new = current + number if as_delta else number
    if not (math.isfinite(number) and math.isfinite(new)):
        return ValueError
    return new


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
    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.sink = RecordingSink(self.clock)
        self.gate = EmergencyGate(self.sink, RiskBook(LIMITS, warn_at=WARN_AT,
                                                      clock=self.clock), self.clock)
        #: (state in the snapshot, last seq sequenced) at each persist() call
        self.persisted: list[tuple[str, int]] = []
        self.gate.persist = self._persist
        self.state = NORMAL
        self.last_change: dict[str, Any] | None = None
        self.changes = 0
        now = self.clock.monotonic()
        self.limits = {c.name: LimitModel(c.name, c.threshold, c.auto_halt, c.stale_after_s,
                                          fed_at=now) for c in LIMITS}
        self.seen = 0  # events already checked
        self.expected: list[dict[str, Any]] = []

    def _persist(self) -> None:
        self.persisted.append((self.gate.snapshot(history=False)["state"],
                               self.sink.last_seq))

    # -- the model's moves ---------------------------------------------------------------------

    def blocking(self) -> list[str]:
        return [m.name for m in self.limits.values() if m.auto_halt and m.exceeded]

    def change_to(self, new: EmergencyState, reason: str, source: str, origin: str) -> None:
        if new is self.state:
            return
        change = {"type": "emergency_state_changed", "state": new.value,
                  "previous_state": self.state.value, "reason": reason, "source": source,
                  "origin": origin}
        self.expected.append(change)
        self.state, self.last_change = new, change
        self.changes += 1

    def operator(self, new: EmergencyState, reason: str, origin: str, force: bool,
                 guarded: bool) -> None:
        """An operator's change, as the EmergencyActor makes it (source "manual")."""
        before = self.state
        persisted = len(self.persisted)
        refused = guarded and not force and bool(self.blocking())
        if refused:
            with pytest.raises(LimitExceeded) as caught:
                self.gate.transition(new, reason, "manual", origin, force=force)
            for name in self.blocking():
                assert name in str(caught.value)
            assert len(self.persisted) == persisted
            event(f"{new.value} refused in {before.value}")
            return
        previous, changed = self.gate.transition(new, reason, "manual", origin, force=force)
        assert (previous, changed) == (before, new is not before)
        self.change_to(new, reason, "manual", origin)
        if changed:  # persisted before its event was sequenced
            assert self.persisted[persisted:] == [(new.value, self.sink.last_seq - 1)]
        event(f"{before.value} -> {new.value}{' forced' if force else ''}")

    # -- rules: the operator ------------------------------------------------------------------

    @rule(reason=st.sampled_from(["manual stop", "exchange down", "ünïcode ✓"]),
          origin=st.sampled_from(["api", "control", "cli", "web"]))
    def halt(self, reason: str, origin: str) -> None:
        self.operator(HALT, reason, origin, force=False, guarded=False)

    @rule(force=st.booleans(), origin=st.sampled_from(["api", "control"]))
    def resume(self, force: bool, origin: str) -> None:
        self.operator(NORMAL, "all clear", origin, force=force, guarded=True)

    @rule(force=st.booleans())
    def alert(self, force: bool) -> None:
        self.operator(ALERT, "watch it", "api", force=force, guarded=True)

    @rule()
    def reduce_only(self) -> None:
        self.operator(REDUCE_ONLY, "close positions", "api", force=False, guarded=False)

    # -- rules: risk figures ------------------------------------------------------------------

    @rule(name=st.sampled_from([c.name for c in LIMITS]), as_delta=st.booleans(),
          figure=figures)
    def report_figure(self, name: str, as_delta: bool, figure: Any) -> None:
        model = self.limits[name]
        before_state, before_stats = self.state, self.gate.book.stats()
        persisted = len(self.persisted)
        update = (RiskUpdate(limit=name, delta=figure) if as_delta
                  else RiskUpdate(limit=name, value=figure))
        outcome = refusal(figure, model.value, as_delta)
        if isinstance(outcome, type):
            with pytest.raises(outcome):
                self.gate.update_risk(update)
            # refused: not the figure, not a flag, not the staleness, not the state
            assert self.gate.book.stats() == before_stats
            assert self.gate.state is before_state
            assert len(self.persisted) == persisted
            event(f"figure refused: {outcome.__name__}")
            return
        verdict, halt_reason = self.gate.update_risk(update)
        new = outcome
        risk_events: list[dict[str, Any]] = []
        warned, exceeded = model.warned, model.exceeded
        if new >= WARN_AT * model.threshold:
            if not warned:
                risk_events.append({"type": "risk_limit_warning", "limit": name, "value": new,
                                    "threshold": model.threshold})
            warned = True
        else:
            warned = False
        if new >= model.threshold:
            if not exceeded:
                risk_events.append({"type": "risk_limit_exceeded", "limit": name,
                                    "value": new, "threshold": model.threshold})
            exceeded = True
        else:
            exceeded = False
        self.limits[name] = replace(model, value=new, warned=warned, exceeded=exceeded,
                                    fed_at=self.clock.monotonic(), stale=False)
        self.expected.extend(risk_events)
        for risk_event in risk_events:
            event(f"{risk_event['type']} {name}")
        breach = exceeded and model.auto_halt
        assert verdict.breach is breach
        if breach and self.state is not HALT:
            assert halt_reason is not None and name in halt_reason
            self.change_to(HALT, halt_reason, "risk_limit", "engine")
            event(f"{before_state.value} -> HALT by limit {name}")
        else:
            assert halt_reason is None
        # HALT is left only by an operator: never by a figure, however low
        assert before_state is not HALT or self.gate.state is HALT
        assert len(self.persisted) == persisted + 1 + (self.state is not before_state)
        assert self.persisted[-1][0] == self.state.value  # limit values are persisted too

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
        """The EmergencyActor's Tick after an advance: `check_stale`, modelled."""
        before = self.state
        now = self.clock.monotonic()
        due = [m for m in self.limits.values()
               if m.stale_after_s is not None and m.fed_at + m.stale_after_s <= now]
        for m in due:
            self.limits[m.name] = replace(m, stale=True, fed_at=now)
        got = self.gate.check_stale()
        target = HALT if any(m.auto_halt for m in due) else ALERT
        if due and RANK[self.state] < RANK[target]:
            assert got is not None and got[0] is target
            for m in due:
                assert f"limit {m.name} " in got[1]
            self.change_to(target, got[1], "stale_feed", "engine")
            event(f"{before.value} -> {target.value} by a stale feed")
        else:
            assert got is None
        assert before is not HALT or self.gate.state is HALT

    @rule(seconds=st.floats(0.0, 25.0, allow_nan=False, allow_infinity=False))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.watchdog()

    @rule(early=st.booleans())
    def time_passes_to_a_stale_deadline(self, early: bool) -> None:
        """Exactly to the next feed's deadline, or to just before it (float-exact edges)."""
        now = self.clock.monotonic()
        deadline = min(m.fed_at + m.stale_after_s for m in self.limits.values()
                       if m.stale_after_s is not None)
        left = deadline - now
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
        verdict = self.gate.admit(run, node_started(category))
        if self.state is HALT and not exempt:
            expected = "halted"
        elif (self.state is REDUCE_ONLY and category == "action" and not reduces_risk
              and not exempt):
            expected = "reduce_only"
        else:
            expected = None
        assert verdict == expected, (self.state, category, reduces_risk, exempt)
        assert run.started is (expected is None)
        if expected is None:
            self.expected.append({"type": "node_started", "node_category": category,
                                  "state": self.state.value})
            if category == "action":
                assert self.gate.starting == 1
                self.gate.action_begun()
        event(f"{category} in {self.state.value}: {verdict or 'admitted'}")

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def state_is_the_models(self) -> None:
        gate = self.gate
        assert gate.state is self.state
        assert self.sink.state == self.state.value  # stamped on workflow events
        last = self.last_change
        if last is not None:
            assert (gate.reason, gate.source, gate.origin) == (
                last["reason"], last["source"], last["origin"])
        assert gate.starting == 0

    @invariant()
    def limits_are_the_models(self) -> None:
        stats = self.gate.book.stats()
        for name, m in self.limits.items():
            lim = self.gate.book.limits[name]
            assert (lim.value, lim.warned, lim.exceeded, lim.stale) == (
                m.value, m.warned, m.exceeded, m.stale), name
            assert lim.fed_at == m.fed_at, name
            assert stats[name]["value"] == m.value
            assert math.isfinite(lim.value)  # nothing ever disarms a limit
        assert self.gate.book.blocking() == self.blocking()

    @invariant()
    def each_change_emitted_exactly_one_event(self) -> None:
        new = self.sink.recorded[self.seen:]
        self.seen = len(self.sink.recorded)
        got = [{k: e[k] for k in expected} for e, expected in zip(new, self.expected,
                                                                     strict=False)]
        assert len(new) == len(self.expected), [e["type"] for e in new]
        assert got == self.expected
        self.expected = []
        history = list(self.gate.history)
        assert len(history) == self.changes
        if self.last_change is not None:
            assert {k: history[-1][k] for k in CHANGE_FIELDS} == {
                k: self.last_change[k] for k in CHANGE_FIELDS}
            assert history[-1]["seq"] == max(e["seq"] for e in self.sink.recorded
                                             if e["type"] == "emergency_state_changed")


KillSwitchMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestKillSwitchStateful = KillSwitchMachine.TestCase

