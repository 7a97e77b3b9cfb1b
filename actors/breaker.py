"""Circuit breakers shared by every execution, keyed by a node's `breaker` (e.g. an exchange).

`threshold` consecutive failed runs open a breaker (every attempt counts, a success resets
the count). While open, runs are refused at once. After `reset_timeout_s` exactly one trial
run is let through (half-open), whatever the number of executions racing for it; its
outcome closes or re-opens the breaker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum, StrEnum
from typing import Any

from actors.clock import Clock
from actors.events import Event, EventSink


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admit(Enum):
    ALLOW = "allow"
    TRIAL = "trial"
    REJECT = "reject"


class CircuitBreaker:
    def __init__(self, key: str, *, threshold: int, reset_timeout_s: float, clock: Clock,
                 sink: EventSink) -> None:
        self.key = key
        self.threshold = threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._sink = sink
        self._lock = threading.Lock()
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.trial_in_flight = False
        self.rejected = 0
        #: Called on every state change (under this breaker's lock): the journal keeps
        #: breaker states with it. Must only enqueue.
        self.on_change: Callable[[], object] = _nothing

    def admit(self) -> Admit:
        """Decide whether a run may start now; TRIAL means "you are the one trial"."""
        if self.state is BreakerState.CLOSED:  # the common case needs no lock
            return Admit.ALLOW
        with self._lock:
            state: BreakerState = self.state  # re-read: it may have changed before the lock
            if state is BreakerState.CLOSED:
                return Admit.ALLOW
            if (state is BreakerState.OPEN
                    and self._clock.monotonic() - self.opened_at >= self.reset_timeout_s):
                self.state = BreakerState.HALF_OPEN
                self.trial_in_flight = True
                self._publish("circuit_half_open")
                return Admit.TRIAL
            if state is BreakerState.HALF_OPEN and not self.trial_in_flight:
                self.trial_in_flight = True  # an earlier trial never ran; this one goes
                return Admit.TRIAL
            self.rejected += 1
            return Admit.REJECT

    def record(self, ok: bool, *, trial: bool, held: list[Event] | None = None) -> None:
        """The outcome of a run that was admitted. With `held`, the state change's event
        is appended to it for the caller to publish after the run's own (its node_failed
        before the circuit_opened it caused), instead of being published now."""
        if ok and not trial and self.failures == 0 and self.state is BreakerState.CLOSED:
            return  # the common case changes nothing: no lock (a success resets failures)
        with self._lock:
            if trial:
                self.trial_in_flight = False
                if ok:
                    self.state = BreakerState.CLOSED
                    self.failures = 0
                    self._publish("circuit_closed", held)
                else:
                    self.failures += 1
                    self._open(held)
                return
            if ok:
                if self.state is BreakerState.CLOSED:
                    self.failures = 0
                return
            self.failures += 1
            if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
                self._open(held)

    def refuses_for(self, seconds: float) -> bool:
        """Whether a run asked for `seconds` from now would be refused: open, with its
        reset timeout not reached by then. (A read without the lock: a change racing it
        only means the run is asked for, and refused or let through, then.)"""
        return (self.state is BreakerState.OPEN and self._clock.monotonic() + seconds
                - self.opened_at < self.reset_timeout_s)

    def release_trial(self) -> None:
        """The trial run was admitted but never started: let the next caller try."""
        with self._lock:
            self.trial_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state.value, "failures": self.failures, "rejected": self.rejected}

    def _open(self, held: list[Event] | None = None) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = self._clock.monotonic()
        self._publish("circuit_opened", held)

    def _publish(self, kind: str, held: list[Event] | None = None) -> None:
        self.on_change()
        event: Event = {"v": 1, "type": kind, "breaker": self.key, "failures": self.failures,
                        "state": self.state.value}
        if held is not None:
            held.append(event)
        else:
            self._sink.emit([event])


class BreakerRegistry:
    """All breakers of one engine, created on first use."""

    def __init__(self, *, threshold: int, reset_timeout_s: float, clock: Clock,
                 sink: EventSink) -> None:
        self._threshold = threshold
        self._reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._sink = sink
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}
        #: Called on any breaker's state change: the journal saves `snapshot()` then.
        self.on_change: Callable[[], object] = _nothing

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            with self._lock:
                breaker = self._breakers.get(key)
                if breaker is None:
                    breaker = CircuitBreaker(key, threshold=self._threshold,
                                             reset_timeout_s=self._reset_timeout_s,
                                             clock=self._clock, sink=self._sink)
                    breaker.on_change = self._changed
                    self._breakers[key] = breaker
        return breaker

    def _changed(self) -> None:
        self.on_change()

    def restore(self, saved: dict[str, dict[str, Any]]) -> None:
        """Put back the breakers a journal kept (at start-up, before anything runs). An
        open or half-open one comes back open, its reset timeout counted from now: a
        restart is no reason to trust an exchange again."""
        for key, fields in saved.items():
            state = fields.get("state")
            if state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
                breaker = self.get(key)
                breaker.state = BreakerState.OPEN
                breaker.failures = int(fields.get("failures", 0))
                breaker.opened_at = self._clock.monotonic()

    def states(self) -> dict[str, str]:
        return {key: b.state.value for key, b in list(self._breakers.items())}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {key: b.snapshot() for key, b in list(self._breakers.items())}


def _nothing() -> None:
    """No journal: breaker states live in memory only."""
