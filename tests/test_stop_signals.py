"""The daemon's stop signals are handled on their own thread: a signal that lands while the
main thread holds a lock the stop needs (a logger's, an Event's) no longer deadlocks it.
The second-signal exit and the ignored repeat are also run against the real daemon
(tests/test_daemon_faults.py)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from transport.stop_signals import REPEAT_SIGNAL_WINDOW_S, StopSignals


class Stops:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.exits: list[int] = []
        self.asked = threading.Event()
        #: The stop path takes this lock, as the daemon's takes its logger's.
        self.lock = threading.Lock()

    def on_stop(self, name: str) -> None:
        with self.lock:
            self.names.append(name)
        self.asked.set()


@pytest.fixture
def stops() -> Iterator[Stops]:
    recorded = Stops()
    signals = StopSignals(recorded.on_stop, exit_now=recorded.exits.append)
    signals.install()
    try:
        yield recorded
    finally:
        signals.uninstall()


def test_a_signal_landing_while_the_main_thread_holds_the_stops_lock_is_handled(
        stops: Stops) -> None:
    with stops.lock:  # a handler that ran the stop here, in this thread, waited for ever
        os.kill(os.getpid(), signal.SIGTERM)
        assert not stops.asked.wait(0.05)  # its Python handler has run by now: it did nothing
    assert stops.asked.wait(5)
    assert stops.names == ["SIGTERM"] and stops.exits == []


def test_a_repeat_within_the_window_is_ignored_and_a_later_one_exits_at_once() -> None:
    recorded = Stops()
    signals = StopSignals(recorded.on_stop, exit_now=recorded.exits.append)
    signals.received(signal.SIGINT)
    signals.received(signal.SIGTERM)  # the same stop, delivered twice
    assert recorded.names == ["SIGINT"] and recorded.exits == []
    signals._first_at = (signals._first_at or 0.0) - REPEAT_SIGNAL_WINDOW_S  # as if later
    signals.received(signal.SIGTERM)
    assert recorded.names == ["SIGINT"] and recorded.exits == [1]


def test_uninstall_puts_the_previous_handlers_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signals = StopSignals(lambda name: None)
    signals.install()
    assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    signals.uninstall()
    assert {signum: signal.getsignal(signum) for signum in before} == before
