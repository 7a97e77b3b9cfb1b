"""The daemon's stop signals are handled on their own thread: a signal that lands while the
main thread holds a lock the stop needs (a logger's, an Event's) no longer deadlocks it.
The second-signal exit and the ignored repeat are also run against the real daemon
(tests/test_daemon_faults.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

import pytest
import structlog

from transport import stop_signals
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


def test_once_the_stop_is_done_a_signal_changes_nothing() -> None:
    recorded = Stops()
    signals = StopSignals(recorded.on_stop, exit_now=recorded.exits.append)
    signals.received(signal.SIGTERM)
    signals.stop_done = True  # the daemon's stop has ended
    signals._first_at = (signals._first_at or 0.0) - REPEAT_SIGNAL_WINDOW_S  # as if later
    signals.received(signal.SIGTERM)
    assert recorded.names == ["SIGTERM"] and recorded.exits == []


def test_ignore_from_now_has_the_process_ignore_the_stop_signals() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signals = StopSignals(lambda name: None)
    try:
        signals.ignore_from_now()
        assert {signum: signal.getsignal(signum) for signum in before} == dict.fromkeys(
            before, signal.SIG_IGN)
        assert signals.stop_done
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_uninstall_puts_the_previous_handlers_back() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    signals = StopSignals(lambda name: None)
    signals.install()
    assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    signals.uninstall()
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_a_stop_is_not_lost_when_the_log_cannot_be_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """stderr's reader gone (a `| tee` that died): every log line raises BrokenPipeError.
    The stop logged first and asked for the stop after, so it was never asked for, the
    thread died, and no later signal did anything (only SIGKILL ended the daemon)."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    broken = open(write_fd, "w", buffering=1)  # noqa: SIM115 - closed below, its flush failing
    try:
        monkeypatch.setattr(stop_signals, "log", structlog.wrap_logger(
            structlog.PrintLogger(broken), processors=[structlog.processors.JSONRenderer()],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG)))
        with pytest.raises(BrokenPipeError):
            stop_signals.log.info("probe")
        recorded = Stops()
        signals = StopSignals(recorded.on_stop, exit_now=recorded.exits.append)
        signals.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            assert recorded.asked.wait(5), "the stop was lost with its log line"
            signals._first_at = (signals._first_at or 0.0) - REPEAT_SIGNAL_WINDOW_S
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = threading.Event()
            for _ in range(500):
                if recorded.exits:
                    break
                deadline.wait(0.01)
            assert recorded.exits == [1], "a later signal did not exit"
        finally:
            signals.uninstall()
    finally:
        with contextlib.suppress(BrokenPipeError):  # what is left unflushed
            broken.close()
