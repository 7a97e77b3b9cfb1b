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

What this cannot cover: an object in a reference cycle of its own is freed by Python's
cyclic collector, on whichever thread the collection runs. (A failed node's exception would
make one of every execution it failed in: its traceback holds the node's frames, and they
the run whose error it is. The node actor drops the traceback once it has the error text.)

The thread starts on the first batch and ends when idle for `IDLE_S`; `close()` lets the
engine's stop wait for what is left, so finalizers run before a process that stops the
engine exits.
"""

from __future__ import annotations

import queue
import threading

from actors.logs import get_logger

__all__ = ["Reaper"]

log = get_logger("tradeloom.reaper")

#: Batches waiting past this many means a `__del__` is stuck: told once per episode.
STUCK_BATCHES = 1000
#: The thread ends after this long with nothing to free (the next batch starts another).
IDLE_S = 1.0


class Reaper:
    """Frees what it is given, in its own daemon thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[list[object] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self._stuck_told = False

    def bury(self, batch: list[object]) -> None:
        """Free `batch`'s items (the caller keeps no reference to the list)."""
        with self._lock:  # (with the idle thread's last look: it sees this batch, or we
            self._queue.put(batch)  # see it has ended and start another)
            if not self._running:
                self._start_locked()
        waiting = self._queue.qsize()
        if waiting > STUCK_BATCHES and not self._stuck_told:
            self._stuck_told = True
            log.warning("finalizer_stuck", batches_waiting=waiting,
                        why="a __del__ of a node output or an input has not returned; what "
                            "finished since is kept until it does")
        elif waiting <= 1:
            self._stuck_told = False

    def close(self, timeout: float) -> bool:
        """Wait up to `timeout` for what was given to be freed; True if it was. (Not for
        ever: a stuck `__del__` must not hold up a stop.) A later `bury` still frees."""
        with self._lock:
            thread = self._thread if self._running else None
        if thread is None:
            return True
        self._queue.put(None)  # wakes an idle thread: it ends once nothing is left
        thread.join(timeout)
        return not thread.is_alive()

    def _start_locked(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="tradeloom-reaper",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        get = self._queue.get
        while True:
            try:
                batch = get(timeout=IDLE_S)
            except queue.Empty:
                batch = None
            if batch is None:
                with self._lock:  # (bury puts, then looks at _running: nothing is missed)
                    if self._queue.empty():
                        self._running = False
                        return
                continue
            # A __del__'s exception never reaches here: Python reports it through
            # sys.unraisablehook and goes on.
            batch.clear()
            del batch
