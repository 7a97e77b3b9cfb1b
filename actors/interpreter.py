"""A halt's hold on the interpreter: a short GIL switch interval while the kill switch works.

A thread that wants the GIL while another runs Python waits up to the switch interval
(CPython's default: 5 ms) before the holder is asked to let go. A halt with 1,000
executions in flight is a crowd of such hand-offs: the supervisors ending executions,
the node threads being woken, the journal writer (which gives the GIL up around every
SQLite call) committing the HALT. At 5 ms each, `bench/halt.py` measured the worst of 30
halts at 56-310 ms; with 1 ms throughout, 33-39 ms, but that cost ~10 % of throughput
all the time. So the interval is short only while a halt is under way: from the call
until its reply (supervisors' acknowledgements and the HALT's commit included).

Overlapping halts share it: the first sets it, the last puts back what it found.

`HaltPriority`: from a halt's call until its reply is out, the work that can wait stops
competing with it for the interpreter: the journal writer (packing and committing the
halted executions' events took half the GIL and doubled the broadcast, journal on) and
the wake-ups of the nodes waiting on their cancel Events (a thousand threads waking kept
the caller from its reply). Both wait a few ms at most; see `bench/halt.py`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: The switch interval while a halt is under way.
HALT_SWITCH_INTERVAL_S = 0.0005
#: After a halt's last hold ends, how long its reply may still take to reach an asker in
#: another thread (`engine.ref.ask(Halt(...))`: the actor's reply is delivered after the
#: hold, and a thread woken meanwhile competes for the GIL with whatever started then).
REPLY_S = 0.005

_lock = threading.Lock()
_holders = 0
_found = 0.0


@contextmanager
def quick_handoffs() -> Iterator[None]:
    """Within: the GIL changes hands every HALT_SWITCH_INTERVAL_S at most."""
    global _holders, _found
    with _lock:
        if _holders == 0:
            _found = sys.getswitchinterval()
            sys.setswitchinterval(min(_found, HALT_SWITCH_INTERVAL_S))
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                sys.setswitchinterval(_found)


class HaltPriority:
    """One engine's halts, for the threads that should give way to them.

    A halt holds it from the call to the reply (`hold`, nested holds share it), and the
    broadcast names the seq of the state change it started from (`first`). The journal
    writer calls `give_way` before taking work: while a halt holds it, the writer waits,
    but only once that state change is committed (the halt's reply waits for that commit,
    so it is never held back), until REPLY_S after the last hold ends, and at most `max_s`
    after the halt began: a halt stuck on a hung supervisor holds the journal back once,
    briefly, never for long. The supervisors wake the nodes waiting on their cancel
    Events once it is `quiet` (or at most WAKE_HOLD_MAX_S after the end).

    A writer already waiting goes on as soon as a later `first` names a seq it has not
    committed: overlapping halts (or a halt's reply that waits for a change made after
    it) must not wait for what the writer holds back. Everything is read under one
    condition, so a wait never mixes one halt's seq with another's start.

    Once the writer stops (`stop_giving_way`: its journal closes) it gives way no more, a
    wait under way included: a close commits what is queued and ends, and holding that
    back helps no halt; it only kept `close()` waiting on a hung halt (up to `max_s`, and
    past close's own timeout when that was shorter: the data_dir then stayed locked)."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._holders = 0
        self._began = 0.0
        self._seq = 0
        #: When the last hold's reply is surely out (monotonic).
        self._quiet_at = 0.0
        #: The journal writer is stopping: give_way returns at once.
        self._writer_stopped = False

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._changed:
            if self._holders == 0:
                self._began, self._seq = time.monotonic(), 0
            self._holders += 1
        try:
            yield
        finally:
            with self._changed:
                self._holders -= 1
                if self._holders == 0:
                    self._quiet_at = time.monotonic() + REPLY_S
                    self._changed.notify_all()

    def quiet(self, now: float) -> bool:
        """No halt under way, nor its reply on its way to an asker (an unlocked look)."""
        return not self._holders and now >= self._quiet_at

    def first(self, state_seq: int) -> None:
        """Everything up to `state_seq` is committed before the writer gives way."""
        with self._changed:
            if state_seq > self._seq:
                self._seq = state_seq
                self._changed.notify_all()  # a writer waiting has that much to commit first

    def give_way(self, committed_seq: int, max_s: float) -> None:
        if self.quiet(time.monotonic()):  # the writer's hot path: nothing to do
            return
        with self._changed:
            while 0 < self._seq <= committed_seq and not self._writer_stopped:
                until = self._began + max_s
                if not self._holders:
                    until = min(until, self._quiet_at)
                left = until - time.monotonic()
                if left <= 0:
                    return
                self._changed.wait(left)

    def stop_giving_way(self) -> None:
        """The journal writer is stopping: a give_way under way returns now, later ones at
        once (a journal's writer stops once and is never restarted)."""
        with self._changed:
            self._writer_stopped = True
            self._changed.notify_all()
