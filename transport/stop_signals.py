"""SIGTERM and SIGINT for the daemon, handled on a thread of their own.

A Python signal handler runs in the main thread between two bytecodes, wherever that
thread is: inside a logger's `with lock:` (structlog's PrintLogger writes under a
`threading.Lock`), or inside `Event.wait` while it holds the Event's lock. A handler that
logged or set an Event from there waited for a lock its own thread held, for ever: a stop
delivered twice hung the daemon after `daemon_stopping` (2 runs in 12 of
tests/test_daemon_faults.py's, two at a time). So the handler installed here does nothing.
`signal.set_wakeup_fd` has the interpreter's C-level handler write each signal's number to
a pipe, and the `tradeloom-signals` thread reads it and does the work (log, ask for the
stop, or exit at once on a second signal), taking locks like any other thread.

The rules: the first signal asks for a clean stop; one arriving less than
REPEAT_SIGNAL_WINDOW_S after it is the same stop delivered twice (a SIGTERM to `make
run`'s process group reaches the daemon, and make forwards it again) and is ignored; a
later one exits at once (the journal is WAL: what was committed stays committed).

Logging here is best effort: a stderr whose reader has gone (a `| tee` that died, a
restarted journald) makes every log call raise, and a stop that came after its log line
was lost with it, the thread dead and every later signal ignored: only SIGKILL stopped
the daemon then.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from actors.logs import get_logger

log = get_logger("tradeloom.daemon")

#: A stop signal arriving this soon after the first is the same stop delivered twice, not
#: an operator's second Ctrl-C asking to exit at once: ignored.
REPEAT_SIGNAL_WINDOW_S = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _leave_it_to_the_thread(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing (the C-level one has written to the wakeup pipe)."""


class StopSignals:
    """`install()` (main thread) routes `signums` (SIGTERM and SIGINT) to `on_stop(signal
    name)` on the `tradeloom-signals` thread; `uninstall()` puts back what was there."""

    def __init__(self, on_stop: Callable[[str], None], *,
                 signums: tuple[int, ...] = STOP_SIGNALS,
                 exit_now: Callable[[int], None] = os._exit) -> None:
        self._on_stop = on_stop
        self._signums = signums
        self._exit_now = exit_now
        self._first_at: float | None = None
        self._fds: tuple[int, int] | None = None
        self._previous: dict[int, object] = {}
        self._previous_fd = -1
        self._thread: threading.Thread | None = None
        #: The clean stop is over: a signal now (the same stop sent twice) changes nothing.
        self.stop_done = False

    def install(self) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)  # set_wakeup_fd's requirement
        self._fds = (read_fd, write_fd)
        self._previous_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        for signum in self._signums:
            self._previous[signum] = signal.signal(signum, _leave_it_to_the_thread)
        self._thread = threading.Thread(target=self._watch, args=(read_fd,),
                                        name="tradeloom-signals", daemon=True)
        self._thread.start()

    def uninstall(self) -> None:
        """Put the handlers and the wakeup fd back; the thread ends (tests)."""
        if self._fds is None:
            return
        signal.set_wakeup_fd(self._previous_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)  # type: ignore[arg-type]
        read_fd, write_fd = self._fds
        self._fds = None
        os.close(write_fd)  # the thread reads end-of-file
        if self._thread is not None:
            self._thread.join(5)
        os.close(read_fd)

    def _watch(self, read_fd: int) -> None:
        while True:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                return
            if not data:
                return
            for signum in data:
                if signum in self._signums:
                    try:
                        self.received(signum)
                    except Exception:  # noqa: BLE001 - the next signal is still handled
                        _log("exception", "stop_signal_failed", signal=signum)

    def ignore_from_now(self) -> None:
        """The clean stop is over (main thread): every later stop signal is ignored, by
        this thread and then by the process itself. Python's exit puts the default action
        back for a signal that has a Python handler, so one that came during the
        interpreter's teardown killed a daemon that had stopped cleanly (exit 143)."""
        self.stop_done = True
        for signum in self._signums:
            signal.signal(signum, signal.SIG_IGN)

    def received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        now = time.monotonic()
        if self.stop_done:
            _log("info", "signal_after_stop_ignored", signal=name)
            return
        if self._first_at is not None:
            if now - self._first_at < REPEAT_SIGNAL_WINDOW_S:
                _log("info", "repeat_signal_ignored", signal=name)
                return
            _log("warning", "second_signal_exit_now", signal=signum)
            self._exit_now(1)
            return
        self._first_at = now
        _log("info", "stop_requested", signal=name)
        self._on_stop(name)


def _log(level: str, event: str, **fields: object) -> None:
    """Log, or not if the log's output fails: the signal's work is done either way."""
    with contextlib.suppress(Exception):
        getattr(log, level)(event, **fields)
