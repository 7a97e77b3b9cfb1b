"""Admission control: at most `max_running` executions run; the rest wait in a bounded
priority queue (higher priority first, then first come); beyond that, `overloaded`."""

from __future__ import annotations

import heapq
import threading
from collections import Counter
from collections.abc import Callable
from itertools import count
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from actors.machine import Execution

RUN, QUEUED, OVERLOADED, HALTED = "run", "queued", "overloaded", "halted"


def _never() -> bool:
    return False


class Admission:
    def __init__(self, *, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self._lock = threading.Lock()
        #: Notified when the last running execution ends (a graceful shutdown waits on it).
        self._idle = threading.Condition(self._lock)
        self._queue: list[tuple[int, int, Execution]] = []
        self._order = count()
        self._cancelled: set[str] = set()
        self.running = 0
        #: Finished executions by terminal status, for status and metrics.
        self.counts: Counter[str] = Counter()
        #: Halts that drained the queue so far (see `Execution.admitted_in`).
        self.halts = 0

    @property
    def queued(self) -> int:
        return len(self._queue) - len(self._cancelled)

    def admit(self, execution: Execution, *, halted: Callable[[], bool] = _never) -> str:
        """RUN, QUEUED, OVERLOADED, or HALTED: `halted()` is asked under the lock a halt's
        drain takes, so a submit that saw no HALT before a halt drained the queue is not
        queued after it (it would run after a resume)."""
        with self._lock:
            if halted():
                self.counts["refused"] += 1
                return HALTED
            execution.admitted_in = self.halts
            if self.running < self.max_running:
                self.running += 1
                return RUN
            if len(self._queue) - len(self._cancelled) < self.max_queued:
                heapq.heappush(self._queue, (-execution.priority, next(self._order), execution))
                return QUEUED
            self.counts["refused"] += 1
            return OVERLOADED

    def force_admit(self) -> None:
        """kill-switch: take a running slot whatever the limit (an on-halt hook must never
        wait behind a full engine). `finish` gives back slots over the limit."""
        with self._lock:
            self.running += 1

    def finish(self, status: str) -> Execution | None:
        """One running execution ended; returns the next one to start, if any."""
        with self._lock:
            self.counts[status] += 1
            # Over the limit means a forced slot (an on-halt hook) or a slot lent to end a
            # cancelled or drained queued execution: nothing queued may take it over.
            while self._queue and self.running <= self.max_running:
                _, _, execution = heapq.heappop(self._queue)
                if execution.id in self._cancelled:
                    self._cancelled.discard(execution.id)
                    continue
                return execution  # it takes over the finished one's running slot
            self.running -= 1
            if self.running == 0:
                self._idle.notify_all()
            return None

    def wait_idle(self, timeout: float | None) -> bool:
        """Wait until nothing runs; False if something still does after `timeout`."""
        with self._lock:
            return self._idle.wait_for(lambda: self.running <= 0, timeout)

    def remove_queued(self, execution_id: str) -> Execution | None:
        """Take a queued execution out (to cancel it); it then holds a running slot."""
        with self._lock:
            for _, _, execution in self._queue:
                if execution.id == execution_id and execution_id not in self._cancelled:
                    self._cancelled.add(execution_id)
                    self.running += 1
                    return execution
            return None

    def drain_queued(self, *, halt: bool = False) -> list[Execution]:
        """Take every queued execution out (halt, stop); each then holds a running slot.
        A halt's also makes every execution admitted before it one to end halted when a
        supervisor starts it (`halts`)."""
        with self._lock:
            if halt:
                self.halts += 1
            drained = [e for _, _, e in sorted(self._queue) if e.id not in self._cancelled]
            self._queue.clear()
            self._cancelled.clear()
            self.running += len(drained)
            return drained
