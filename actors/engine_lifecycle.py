"""The engine's lifecycle: closing admission, waiting idle, and the one stop (a part of
`Engine`, a mixin it inherits, kept apart so each file reads as one concern).

A stop ends every execution cancelled and stops every actor, never waiting on a stuck
node; then the subscribers get the final committed events, the in-process sockets send
them and close, and the journal closes last.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Self

import pykka

from actors._compat import on_engine_actor_thread
from actors.ending import Ending
from actors.eventlog import DRAIN_S, current_subscription
from actors.execution import wait_limit
from actors.logs import get_logger
from actors.messages import EndExecutions, StartExecution

if TYPE_CHECKING:
    from actors.admission import Admission
    from actors.durable import Durable
    from actors.events import EventSink
    from actors.reaper import Reaper
    from actors.triggers import IntervalTriggers
    from transport.engine_sockets import EngineSockets

__all__ = ["STOP_DRAIN_S", "EngineLifecycle"]

log = get_logger("tradeloom.engine")
#: What a stop waits beyond its `timeout`: the events' commit and delivery (DRAIN_S each)
#: and the journal's close (its writer's and checkpointer's joins, 5 s each at most).
STOP_DRAIN_S = 2 * DRAIN_S + 10.0


class EngineLifecycle:
    """close_admission / wait_idle / stop, for `Engine`."""

    _lock: threading.RLock
    _stopped: bool
    #: Set once the first stop() has finished: another thread's stop() waits for it.
    _stop_done: threading.Event
    #: The first stop()'s thread: a signal handler on it must not wait for itself.
    _stopping_thread: int | None
    #: A stop() cut short (Ctrl-C in it): the next one goes through the shutdown again.
    _stop_cut_short: bool
    #: Why admission is closed (a graceful shutdown under way), or None.
    _closing: str | None
    admission: Admission
    sink: EventSink
    ref: pykka.ActorRef[Any]
    _emergency: pykka.ActorRef[Any]
    _supervisors: list[pykka.ActorRef[Any]]
    _next_supervisor: Callable[[], pykka.ActorRef[Any]]
    _durable: Durable | None
    _sockets: EngineSockets | None
    _reaper: Reaper
    triggers: IntervalTriggers

    if TYPE_CHECKING:
        def close_journal(self) -> bool: ...  # (JournalSide's)

    def close_admission(self, why: str = "the engine is shutting down") -> None:
        """Admit nothing new from now on (`submit` raises EngineStopped) and end the queued
        executions cancelled; running ones go on (a daemon's graceful shutdown)."""
        self._closing = why
        ending = Ending.cancelled(why)
        for exe in self.admission.drain_queued():
            exe.ending_on_start = ending
            self._next_supervisor().tell(StartExecution(exe))

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no execution runs; False if some still do after `timeout`."""
        return self.admission.wait_idle(wait_limit(timeout))

    def stop(self, timeout: float = 5.0, *, close_journal: bool = True) -> None:
        """End every execution (cancelled), stop every actor. Never waits on a stuck node.
        The journal is flushed and closed, unless `close_journal=False` (then call
        `close_journal()` once the last readers are done). Called while another thread's
        stop is under way, it waits for that one (up to `timeout` plus the drains), except
        from a subscriber callback or an engine actor's thread (a done callback there),
        which that stop may be waiting for, or from a signal handler that interrupted that
        stop in its own thread (it goes on once the handler returns). A stop cut short (a
        handler's exception, Ctrl-C) is gone through again by the next call."""
        with self._lock:
            wait_s = wait_limit(timeout)  # before anything stops: a bad one must not half-stop
            first = not self._stopped or self._stop_cut_short
            self._stopped, self._stop_cut_short = True, False
            if first:
                self._stopping_thread = threading.get_ident()
                self._stop_done.clear()
        if not first:
            if (current_subscription() is None and not on_engine_actor_thread()
                    and self._stopping_thread != threading.get_ident()):  # (a handler)
                self._stop_done.wait(None if wait_s is None else wait_s + STOP_DRAIN_S)
            return
        try:
            self._shut_down(wait_s, timeout, close_journal)
        except BaseException:
            self._stop_cut_short = True  # its actors, sockets and journal may still be open
            raise
        finally:
            self._stop_done.set()

    def _shut_down(self, wait_s: float | None, timeout: float, close_journal: bool) -> None:
        self.triggers.stop()
        stopped = Ending.cancelled("engine stopped")
        self._end_queued(stopped)
        end = EndExecutions(stopped)
        futures = [sup.ask(end, block=False) for sup in self._supervisors]
        for future in futures:
            try:
                future.get(timeout=wait_s)
            except pykka.Timeout:
                log.error("supervisor_did_not_stop", timeout_s=timeout)
            except pykka.ActorDeadError:
                pass  # stopped by a stop cut short after it
        # The kill switch before the supervisors: a halt it is broadcasting gets its
        # acknowledgements (stopped first, they left its asks unanswered until its timeout).
        refs: list[pykka.ActorRef[Any]] = [self.ref, self._emergency, *self._supervisors]
        for ref in refs:
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                ref.stop(timeout=wait_s)
        if not self._reaper.close(DRAIN_S):  # finalizers run before a stopping process exits
            log.warning("finalizers_not_done", waited_s=DRAIN_S,
                        why="a __del__ of a node output or an input has not returned")
        # events: subscribers get the final events (bounded), then their threads end.
        if self._durable is not None:
            self._durable.wait_commit(DRAIN_S)  # readers see them only once committed
        self.sink.log.close_all(timeout=DRAIN_S)
        try:
            if self._sockets is not None:  # after the last commit: its events are sent first
                self._sockets.close()
        finally:  # a socket that fails to close must not leave the journal open
            if close_journal:
                self.close_journal()

    def _end_queued(self, stopped: Ending) -> None:
        # A method of its own, so that no local of the stopping thread's keeps the last
        # queued execution (and what user objects it holds) once a supervisor has it.
        for exe in self.admission.drain_queued():
            exe.ending_on_start = stopped
            with contextlib.suppress(pykka.ActorDeadError):  # (a stop cut short, again)
                self._next_supervisor().tell(StartExecution(exe))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

