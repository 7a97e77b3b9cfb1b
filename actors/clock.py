"""Time as a collaborator, so tests of backoff, breakers and daily resets take milliseconds.

The engine reads two clocks: `monotonic()` for deadlines (timeouts, backoff, breaker reset)
and `time()` for wall-clock facts (event timestamps, the trading day of `daily_loss`, the
age of journal rows for `keep_days`), which may jump either way (NTP steps, DST is not one).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    """What the engine needs to know about time."""

    #: True when deadlines pass on their own; False when only `advance()` moves time on.
    real: bool

    def monotonic(self) -> float: ...

    def time(self) -> float: ...

    def on_advance(self, callback: Callable[[], None]) -> None: ...


class SystemClock:
    """The machine's clocks (the builtins themselves: these are called on every event)."""

    real = True
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def on_advance(self, callback: Callable[[], None]) -> None:
        """Real time advances by itself; nobody needs telling."""


class ManualClock:
    """A clock that moves only when told to; supervisors are woken on every advance."""

    real = False

    def __init__(self, *, start_wall: float = 1_800_000_000.0, start_mono: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start_wall
        self._mono = start_mono
        self._listeners: list[Callable[[], None]] = []

    def monotonic(self) -> float:
        return self._mono

    def time(self) -> float:
        return self._wall

    def on_advance(self, callback: Callable[[], None]) -> None:
        with self._lock:
            self._listeners.append(callback)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward and wake everyone with timers."""
        if not seconds >= 0:  # NaN too: it would turn every later deadline into NaN
            raise ValueError(f"a clock does not go backwards, not {seconds!r}")
        if seconds == math.inf:
            raise ValueError("a clock cannot go forward by an infinite time")
        with self._lock:
            self._mono += seconds
            self._wall += seconds
            listeners = list(self._listeners)
        for callback in listeners:
            callback()

    def set_wall(self, wall: float) -> None:
        """Jump the wall clock (e.g. to just before 00:00 UTC) without moving deadlines."""
        with self._lock:
            self._wall = wall
