"""One actor's timers: a heap of deadlines with lazy deletion.

Timers are never removed when what they guard finishes (a 30 s node timeout on a 1 ms
node): `alive(entry)` says whether one still matters, and the dead are swept once they
outnumber the live ones four to one, so memory tracks what is in flight.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count
from typing import Any

from actors.clock import Clock

Entry = tuple[float, int, int, Any, Any]  # deadline, order, kind, target, arg
_MIN_SWEEP = 4096


class TimerHeap:
    def __init__(self, clock: Clock, alive: Callable[[Entry], bool]) -> None:
        self._clock = clock
        self._alive = alive
        self._heap: list[Entry] = []
        self._order = count()
        self._sweep_at = _MIN_SWEEP

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline: float, kind: int, target: Any, arg: Any = None) -> None:
        heap = self._heap
        heapq.heappush(heap, (deadline, next(self._order), kind, target, arg))
        if len(heap) > self._sweep_at:
            self._sweep()

    def next_delay(self) -> float | None:
        """Seconds until the next deadline; None to wait for a message (or a manual tick)."""
        heap = self._heap
        if not heap:
            return None
        delay = heap[0][0] - self._clock.monotonic()
        if delay <= 0:
            return 0.0
        return delay if self._clock.real else None

    def has_due(self) -> bool:
        heap = self._heap
        return bool(heap) and heap[0][0] <= self._clock.monotonic()

    def pop_due(self) -> list[tuple[int, Any, Any]]:
        """(kind, target, arg) of every entry due now, earliest first. Taken out before the
        caller handles them: handling pushes timers, and a push may sweep the heap."""
        heap = self._heap
        now = self._clock.monotonic()
        due = []
        while heap and heap[0][0] <= now:
            _, _, kind, target, arg = heapq.heappop(heap)
            due.append((kind, target, arg))
        return due

    def _sweep(self) -> None:
        alive = [entry for entry in self._heap if self._alive(entry)]
        heapq.heapify(alive)
        self._heap = alive
        self._sweep_at = max(_MIN_SWEEP, 4 * len(alive))
