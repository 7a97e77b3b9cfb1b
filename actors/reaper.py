"""Where user objects die: a thread of their own, never a supervisor's.

An object a node returned (or a caller submitted as an input) is freed when its last
reference goes. For an execution nobody waits on (a daemon's submit, an interval trigger)
that last reference is the supervisor's, so the object's `__del__` ran on the supervisor's
thread: one that blocks (a client closing its connection with a round trip to the exchange)
held up every node start and every ending of every execution for as long as it took.

So a supervisor hands what may run user code when freed (an execution whose inputs or
outputs are not plain data, a late node run with such an output) to the engine's `Reaper`
instead of letting it go. Plain data (exact dicts, lists, numbers, text: `packing.event_form`
returns it as it is) has no `__del__` and is freed where it is, at no cost. A batch is handed
over one message after it was filled, once the supervisor's own locals (the message it was
handling) no longer hold it: the reaper then holds the last references.
"""

from __future__ import annotations

import queue
import threading

import structlog

__all__ = ["Reaper"]

log = structlog.get_logger("tradeloom.reaper")

#: Batches waiting past this many means a `__del__` is stuck: told once per episode.
STUCK_BATCHES = 1000


class Reaper:
    """Frees what it is given, in its own daemon thread (started on first use)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stuck_told = False

    def bury(self, batch: list[object]) -> None:
        """Free `batch`'s items (the caller keeps no reference to the list)."""
        if self._thread is None:
            self._start()
        self._queue.put(batch)
        waiting = self._queue.qsize()
        if waiting > STUCK_BATCHES and not self._stuck_told:
            self._stuck_told = True
            log.warning("finalizer_stuck", batches_waiting=waiting,
                        why="a __del__ of a node output or an input has not returned; what "
                            "finished since is kept until it does")
        elif waiting <= 1:
            self._stuck_told = False

    def close(self) -> None:
        """Stop the thread once it has freed what it was given (not waited for: a stuck
        `__del__` must not hold up a stop)."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                thread = threading.Thread(target=self._run, name="tradeloom-reaper",
                                          daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            # A __del__'s exception never reaches here: Python reports it through
            # sys.unraisablehook and goes on.
            batch.clear()
            del batch
