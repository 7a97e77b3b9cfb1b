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
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from actors import Config, Engine, Node, NodeContext, Workflow
from actors.clock import ManualClock
from actors.config import LimitConfig
from actors.emergency import EmergencyGate, EmergencyState
from actors.errors import LimitExceeded, NotFound
from actors.events import Event, EventSink
from actors.messages import RiskUpdate
from actors.risk import RiskBook
from tests.conftest import Recorder

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


class Mentions:
    """Equal to any string that contains each of `words` (a reason the model cannot spell
    out in full: a limit's figure, a feed's silence)."""

    def __init__(self, *words: str) -> None:
        self.words = words

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and all(word in other for word in self.words)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mentions{self.words!r}"


class KillSwitchModel:
    """The kill switch as CONTRACT sections 7 and 8 describe it, and the events it owes."""

    def __init__(self, now: float) -> None:
        self.state = NORMAL
        self.last_change: dict[str, Any] | None = None
        self.changes = 0
        self.limits = {c.name: LimitModel(c.name, c.threshold, c.auto_halt, c.stale_after_s,
                                          fed_at=now) for c in LIMITS}
        #: events owed since the last check, in order
        self.expected: list[dict[str, Any]] = []

    def blocking(self) -> list[str]:
        return [m.name for m in self.limits.values() if m.auto_halt and m.exceeded]

    def change_to(self, new: EmergencyState, reason: object, source: str, origin: str) -> None:
        if new is self.state:
            return
        change = {"type": "emergency_state_changed", "state": new.value,
                  "previous_state": self.state.value, "reason": reason, "source": source,
                  "origin": origin}
        self.expected.append(change)
        self.state, self.last_change = new, change
        self.changes += 1

    def operator(self, new: EmergencyState, reason: str, origin: str, *, force: bool) -> bool:
        """An operator's change (source "manual"); False when it must be refused."""
        if new in (NORMAL, ALERT) and not force and self.blocking():
            event(f"{new.value} refused in {self.state.value}")
            return False
        event(f"{self.state.value} -> {new.value}{' forced' if force else ''}")
        self.change_to(new, reason, "manual", origin)
        return True

    def figure(self, name: str, figure: object, *, as_delta: bool,
               now: float) -> type[Exception] | None:
        """A risk figure: the exception it must be refused with, or None once applied."""
        model = self.limits[name]
        outcome = refusal(figure, model.value, as_delta)
        if isinstance(outcome, type):
            event(f"figure refused: {outcome.__name__}")
            return outcome
        new = outcome
        warned = new >= WARN_AT * model.threshold
        exceeded = new >= model.threshold
        for crossed, before, kind in ((warned, model.warned, "risk_limit_warning"),
                                      (exceeded, model.exceeded, "risk_limit_exceeded")):
            if crossed and not before:  # once per upward crossing
                self.expected.append({"type": kind, "limit": name, "value": new,
                                      "threshold": model.threshold,
                                      "utilization": new / model.threshold})
                event(f"{kind} {name}")
        self.limits[name] = replace(model, value=new, warned=warned, exceeded=exceeded,
                                    fed_at=now, stale=False)
        if exceeded and model.auto_halt and self.state is not HALT:
            event(f"{self.state.value} -> HALT by limit {name}")
            self.change_to(HALT, Mentions(name), "risk_limit", "engine")
        return None

    def watchdog(self, now: float) -> tuple[EmergencyState, object] | None:
        """The stale-feed watchdog at `now`: the state it raises to and why, if it does."""
        due = [m for m in self.limits.values()
               if m.stale_after_s is not None and m.fed_at + m.stale_after_s <= now]
        for m in due:  # marked stale, and its silence counted again from now
            self.limits[m.name] = replace(m, stale=True, fed_at=now)
        target = HALT if any(m.auto_halt for m in due) else ALERT
        if not due or RANK[self.state] >= RANK[target]:
            return None
        event(f"{self.state.value} -> {target.value} by a stale feed")
        reason = Mentions(*(f"limit {m.name} " for m in due))
        self.change_to(target, reason, "stale_feed", "engine")
        return target, reason

    def admits(self, category: str, *, reduces_risk: bool, exempt: bool) -> str | None:
        """Why a node may not start now (the gate's refusal), or None."""
        if self.state is HALT and not exempt:
            return "halted"
        if (self.state is REDUCE_ONLY and category == "action" and not reduces_risk
                and not exempt):
            return "reduce_only"
        return None

    def next_stale_deadline(self) -> float:
        return min(m.fed_at + m.stale_after_s for m in self.limits.values()
                   if m.stale_after_s is not None)


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


def assert_limits(book: RiskBook, model: KillSwitchModel) -> None:
    stats = book.stats()
    for name, m in model.limits.items():
        lim = book.limits[name]
        assert (lim.value, lim.warned, lim.exceeded, lim.stale) == (
            m.value, m.warned, m.exceeded, m.stale), name
        assert lim.fed_at == m.fed_at, name
        assert stats[name]["value"] == m.value
        assert math.isfinite(lim.value)  # nothing ever disarms a limit
    assert book.blocking() == model.blocking()


def assert_owed_events(new: list[Event], model: KillSwitchModel) -> None:
    """`new` are exactly the events the model owes (each with the fields it predicts)."""
    owed = model.expected
    assert [e["type"] for e in new] == [e["type"] for e in owed]
    assert [{k: e[k] for k in expected} for e, expected in zip(new, owed, strict=True)] == owed
    model.expected = []


def assert_history(history: list[dict[str, Any]], model: KillSwitchModel,
                   events: list[Event]) -> None:
    assert len(history) == model.changes
    if model.last_change is not None:
        assert {k: history[-1][k] for k in CHANGE_FIELDS} == {
            k: model.last_change[k] for k in CHANGE_FIELDS}
        assert history[-1]["seq"] == max(e["seq"] for e in events
                                         if e["type"] == "emergency_state_changed")


KillSwitchMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestKillSwitchStateful = KillSwitchMachine.TestCase


# -- the same model, through a real Engine ----------------------------------------------------
# The public API (engine.halt / resume / alert / reduce_only / risk_update, ctx.risk in a
# node, submit) and the EmergencyActor between it and the gate, with real actors and
# threads; fewer examples, as each starts an engine.

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
        self.operator(lambda: self.engine.halt("stop", origin=origin), HALT, "stop", origin,
                      False)

    @rule(force=st.booleans())
    def resume(self, force: bool) -> None:
        self.operator(lambda: self.engine.resume("clear", force=force), NORMAL, "clear", "api",
                      force)

    @rule(force=st.booleans())
    def alert(self, force: bool) -> None:
        self.operator(lambda: self.engine.alert("watch", force=force), ALERT, "watch", "api",
                      force)

    @rule()
    def reduce_only(self) -> None:
        self.operator(lambda: self.engine.reduce_only("close"), REDUCE_ONLY, "close", "api",
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
        assert before_state is not HALT or self.engine.state is HALT

    @rule(seconds=st.floats(0.0, 25.0, allow_nan=False, allow_infinity=False))
    def time_passes(self, seconds: float) -> None:
        before = self.model.state
        self.clock.advance(seconds)  # tells the kill switch's mailbox to look (a Tick)
        self.engine.risk_update("barrier", value=0.0)  # ... and it has looked
        self.model.watchdog(self.clock.monotonic())
        assert before is not HALT or self.engine.state is HALT

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
        if self.model.state is HALT:
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
