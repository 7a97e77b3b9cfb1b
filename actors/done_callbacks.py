"""The thread that runs done callbacks handed off by threads they could hold up.

A done callback is user code: it may block, wait for another execution or call `halt()`.
Run on the journal's writer thread it would hold up every commit; run on a supervisor's,
its own executions. `DoneCallbackThread.run_later` queues them for one daemon thread,
`tradeloom-done-callbacks`, made on first use, which runs them in order.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence

from actors.errors import failure_fields
from actors.logs import get_logger

log = get_logger("tradeloom.events")


class DoneCallbackThread:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[list[Callable[[], None]] | None] | None = None
        self._closed = False

    def run_later(self, fns: list[Callable[[], None]]) -> None:
        """Run `fns`, in order, on the thread (started on first use). If the OS refuses
        the thread (can't start new thread), they run here, now, and the next call tries
        again: a queue nobody reads would hold every later callback. After `close()`
        (a journal's last commits at a stop come after it), each call gets a thread of
        its own for the same reason."""
        with self._lock:  # (queued under it: never behind close()'s end mark)
            if not self._closed:
                if self._queue is None:
                    self._queue = _serving_thread()
                if self._queue is not None:
                    self._queue.put(fns)
                    return
            closed = self._closed
        if closed:
            _start_or_run(fns, name="tradeloom-done-callbacks-late")
        else:
            run_all(fns)

    def close(self) -> None:
        """The thread ends after what is queued (if it was ever started)."""
        with self._lock:
            self._closed = True
            if self._queue is not None:
                self._queue.put(None)


def _serving_thread() -> queue.SimpleQueue[list[Callable[[], None]] | None] | None:
    """A new queue with the thread that serves it, or None if the OS refuses the thread."""
    fns_queue: queue.SimpleQueue[list[Callable[[], None]] | None] = queue.SimpleQueue()
    try:
        threading.Thread(target=_serve, args=(fns_queue,), name="tradeloom-done-callbacks",
                         daemon=True).start()
    except RuntimeError as exc:
        log.error("done_callbacks_thread_failed", error=str(exc))
        return None
    return fns_queue


def _start_or_run(fns: list[Callable[[], None]], *, name: str) -> None:
    try:
        threading.Thread(target=run_all, args=(fns,), name=name, daemon=True).start()
    except RuntimeError as exc:
        log.error("done_callbacks_thread_failed", error=str(exc))
        run_all(fns)


def _serve(fns_queue: queue.SimpleQueue[list[Callable[[], None]] | None]) -> None:
    while (fns := fns_queue.get()) is not None:
        run_all(fns)


def run_all(fns: Sequence[Callable[[], None]]) -> None:
    """Call each of `fns`; what one raises is logged, and the rest still run."""
    for fn in fns:
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - a done callback must not break its caller
            log.error("done_callback_failed", **failure_fields(exc))
