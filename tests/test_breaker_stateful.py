"""The circuit breaker as a state machine (Hypothesis stateful), against a model.

`CircuitBreaker` (actors/breaker.py) is driven directly, with a ManualClock and a sink that
records what it sequences: no engine, no threads. Runs are asked for, finish (success or
failure) in any order, or are handed back unstarted (a trial the kill switch refused);
time moves on. A model written from CONTRACT section 7 ("Circuit breakers") predicts every
answer, every state and every `circuit_*` event:

- CLOSED: every run goes; `threshold` consecutive failures (every attempt counts, a
  success resets the count) open it.
- OPEN: runs are refused at once, until `reset_timeout_s` has passed since it opened.
- HALF_OPEN: exactly one trial run at a time; its success closes the breaker, its failure
  opens it again (and the cooldown starts over). A trial that never started is handed
  back and the next caller becomes the trial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from actors.breaker import Admit, BreakerState, CircuitBreaker
from actors.clock import ManualClock
from tests.conftest import RecordingSink


@dataclass(frozen=True)
class Run:
    """A run the breaker admitted and that has not reported yet."""

    number: int
    trial: bool


@dataclass
class BreakerModel:
    """What CONTRACT section 7 says the breaker is, written without looking at its code."""

    threshold: int
    reset_timeout_s: float
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_out: bool = False
    rejected: int = 0

    def admit(self, now: float) -> tuple[Admit, list[str]]:
        if self.state is BreakerState.CLOSED:
            return Admit.ALLOW, []
        if self.state is BreakerState.OPEN:
            if now - self.opened_at >= self.reset_timeout_s:
                self.state, self.trial_out = BreakerState.HALF_OPEN, True
                return Admit.TRIAL, ["circuit_half_open"]
            self.rejected += 1
            return Admit.REJECT, []
        if not self.trial_out:  # the trial was handed back: this caller is the trial
            self.trial_out = True
            return Admit.TRIAL, []
        self.rejected += 1
        return Admit.REJECT, []

    def record(self, ok: bool, trial: bool, now: float) -> list[str]:
        if trial:
            self.trial_out = False
            if ok:
                self.state, self.failures = BreakerState.CLOSED, 0
                return ["circuit_closed"]
            self.failures += 1
            return self._open(now)
        if ok:
            if self.state is BreakerState.CLOSED:
                self.failures = 0
            return []
        self.failures += 1  # every attempt counts, whatever the state it ends in
        if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            return self._open(now)
        return []

    def _open(self, now: float) -> list[str]:
        self.state, self.opened_at = BreakerState.OPEN, now
        return ["circuit_opened"]

    def refuses_for(self, now: float, seconds: float) -> bool:
        """A run asked for `seconds` from now is refused: open, and not yet at its reset
        then (what `admit` would answer at that time, nothing else happening)."""
        return (self.state is BreakerState.OPEN
                and not (now + seconds) - self.opened_at >= self.reset_timeout_s)


class BreakerMachine(RuleBasedStateMachine):
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock()
        self.sink = RecordingSink(self.clock)
        self.seen = 0  # events already checked
        self.expected: list[dict[str, Any]] = []
        self.changes = 0
        self.on_change_calls = 0
        self.run_numbers = 0
        self.trials_out = 0
        self.breaker: CircuitBreaker
        self.model: BreakerModel

    @initialize(threshold=st.integers(1, 4),
                reset_timeout_s=st.sampled_from([0.01, 0.5, 1.0, 7.5, 30.0]))
    def build(self, threshold: int, reset_timeout_s: float) -> None:
        self.breaker = CircuitBreaker("venue", threshold=threshold,
                                      reset_timeout_s=reset_timeout_s, clock=self.clock,
                                      sink=self.sink)
        self.breaker.on_change = self._count_change
        self.model = BreakerModel(threshold, reset_timeout_s)

    def _count_change(self) -> None:
        self.on_change_calls += 1

    def _expect(self, kinds: list[str]) -> None:
        for kind in kinds:
            self.changes += 1
            self.expected.append({"type": kind, "breaker": "venue",
                                  "failures": self.model.failures,
                                  "state": self.model.state.value})

    # -- rules -------------------------------------------------------------------------------

    @rule(target=runs)
    def ask_to_run(self) -> Any:
        before = self.model.state
        verdict = self.breaker.admit()
        event(f"admit in {before.value}: {verdict.value}")  # coverage, --hypothesis-show-statistics
        expected, events = self.model.admit(self.clock.monotonic())
        assert verdict is expected, (verdict, expected, self.model)
        self._expect(events)
        if verdict is Admit.REJECT:
            return multiple()
        if verdict is Admit.TRIAL:
            self.trials_out += 1
        self.run_numbers += 1
        return Run(self.run_numbers, verdict is Admit.TRIAL)

    # Failures three times out of four: the interesting states are past a few of them.
    @rule(run=consumes(runs), ok=st.integers(0, 3).map(lambda n: n == 0))
    def run_ends(self, run: Run, ok: bool) -> None:
        event(f"{'trial' if run.trial else 'run'} {'ok' if ok else 'failed'} in "
              f"{self.model.state.value}")
        self.breaker.record(ok, trial=run.trial)
        self._expect(self.model.record(ok, run.trial, self.clock.monotonic()))
        if run.trial:
            self.trials_out -= 1

    @rule(run=consumes(runs))
    def run_never_starts(self, run: Run) -> None:
        # As BreakerGuard.after_run: a denied trial is handed back, a denied run forgotten.
        event(f"{'trial' if run.trial else 'run'} never started")
        if run.trial:
            self.breaker.release_trial()
            self.model.trial_out = False
            self.trials_out -= 1

    @rule(seconds=st.floats(0.0, 40.0, allow_nan=False, allow_infinity=False),
          to_the_reset=st.sampled_from([None, "at", "before"]))
    def a_retry_is_asked_about(self, seconds: float, to_the_reset: str | None) -> None:
        """The supervisor asks, for a failed run's retry due in `seconds`, whether the
        breaker would refuse it then (skipped at once, not after the backoff); at the reset
        deadline or just before it, too."""
        now = self.clock.monotonic()
        if to_the_reset is not None and self.model.state is BreakerState.OPEN:
            seconds = max(0.0, self.model.opened_at + self.model.reset_timeout_s - now)
            if to_the_reset == "before":
                seconds = max(0.0, math.nextafter(seconds, -math.inf))
        refused = self.breaker.refuses_for(seconds)
        event(f"retry asked about in {self.model.state.value}: refused {refused}")
        assert refused is self.model.refuses_for(now, seconds), (seconds, self.model)

    @rule(seconds=st.floats(0.0, 40.0, allow_nan=False, allow_infinity=False))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.model.state is BreakerState.OPEN)
    @rule(early=st.booleans())
    def time_passes_to_the_cooldown(self, early: bool) -> None:
        """To the reset deadline exactly, or to just before it (float-exact edges)."""
        left = self.model.opened_at + self.model.reset_timeout_s - self.clock.monotonic()
        if early:
            left = math.nextafter(left, -math.inf) if left > 0 else -1.0
        if left >= 0:
            self.clock.advance(left)

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def state_is_the_models(self) -> None:
        breaker, model = self.breaker, self.model
        assert breaker.state is model.state
        assert breaker.failures == model.failures
        assert breaker.trial_in_flight is model.trial_out
        assert breaker.snapshot() == {"state": model.state.value, "failures": model.failures,
                                      "rejected": model.rejected}
        if model.state is not BreakerState.CLOSED:
            assert breaker.opened_at == model.opened_at

    @invariant()
    def at_most_one_trial_at_a_time(self) -> None:
        assert self.trials_out in (0, 1)
        assert (self.trials_out == 1) is self.breaker.trial_in_flight
        if self.trials_out:
            assert self.breaker.state is BreakerState.HALF_OPEN

    @invariant()
    def each_transition_emitted_its_event_once(self) -> None:
        new = self.sink.recorded[self.seen:]
        self.seen = len(self.sink.recorded)
        got = [{k: e[k] for k in ("type", "breaker", "failures", "state")} for e in new]
        assert got == self.expected
        self.expected = []
        assert self.on_change_calls == self.changes  # the journal hears of every change


BreakerMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestBreakerStateful = BreakerMachine.TestCase
