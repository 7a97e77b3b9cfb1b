"""How a supervisor ends an execution: close it (its runs cancelled, its events out under
the sequencing lock), then finish it (free its slot, record it, resolve its handle), and
contain an error in the engine's own handling so that the execution still ends.

A part of `SupervisorActor` (a mixin it inherits, as `Engine` has its own); the actor loop,
dispatch and timers are in `actors/supervisor.py`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType

from actors.admission import Admission
from actors.clock import Clock
from actors.ending import Ending, ExecutionStatus
from actors.errors import failure_fields
from actors.events import Event, EventSink
from actors.execution import ExecutionResult
from actors.logs import get_logger
from actors.machine import Execution
from actors.supervisor_timers import ABANDON_AFTER_CANCEL_S, TimerKind
from actors.timers import TimerHeap

__all__ = ["ExecutionClosing"]

log = get_logger("tradeloom.supervisor")


class ExecutionClosing:
    """Closing, finishing and containing, for `SupervisorActor`."""

    _sink: EventSink
    _clock: Clock
    _admission: Admission
    _record: Callable[[ExecutionResult], None]
    _live: dict[str, Execution]
    #: What may run user code when freed (see actors/reaper.py).
    _graveyard: list[object]
    #: While ending executions in bulk: cancel Events that nodes wait on, to set after.
    _deferred_wakes: list[threading.Event] | None
    _timers: TimerHeap

    def _start(self, exe: Execution) -> None:
        raise NotImplementedError  # SupervisorActor's

    def _close(self, exe: Execution, ending: Ending, events: list[Event] | None = None,
               failed_node: int | None = None, *, queued: bool = False) -> None:
        """End `exe` with `ending`, after `events`. `queued`: it never left the queue (its
        `execution_started` is in `events`); no node_skipped between it and the end."""
        if exe.closed:
            return
        events = events if events is not None else []
        with self._sink.lock:
            now = self._clock.monotonic()
            runs = exe.close(ending, failed_node, now, events, skip_events=not queued)
            for run in runs:
                if self._deferred_wakes is None:
                    run.cancel()
                else:
                    wake = run.request_cancel()
                    if wake is not None:
                        self._deferred_wakes.append(wake)
            # Read before it is out: the journal's writer may cut the event's user data
            # (`[journal] max_event_bytes`), and the result keeps the full values.
            nodes = events[-1].get("nodes")
            self._sink.emit_locked(events)
        for run in runs:  # one that does not come back is given up (`_still_running`)
            self._timers.push(now + ABANDON_AFTER_CANCEL_S, TimerKind.CANCELLED_RUN,
                              weakref.ref(run))
        self._finish(exe, ending, events[-1], nodes)

    def _finish(self, exe: Execution, ending: Ending, terminal: Event,
                nodes: Mapping[str, Mapping[str, object]] | None = None) -> None:
        """The terminal event is out: free the slot, record, resolve the handle. `nodes`:
        the terminal event's node report, read before the event went out."""
        del self._live[exe.id]
        wf = exe.workflow
        result = ExecutionResult(
            execution_id=exe.id, workflow_id=wf.id, status=ending.status.value,
            results=MappingProxyType(exe.result_outputs()), error=ending.error,
            error_type=ending.error_type, duration_ms=terminal["duration_ms"],
            started_at=exe.started_event.get("timestamp") or None,
            ended_at=terminal["timestamp"],
            node_report=nodes or exe.node_summary())
        if ending.status is ExecutionStatus.FAILED:
            log.warning("execution_ended", execution_id=exe.id, workflow_id=wf.id,
                        status=ending.status.value, error_type=ending.error_type,
                        error=ending.error)
        try:
            self._record(result)
        finally:
            successor = self._admission.finish(ending.status)
            handle, exe.handle = exe.handle, None  # no cycle exe -> handle -> result -> exe:
            if exe.holds_user_objects():  # its last reference goes in the reaper's thread
                self._graveyard.append((exe, result, handle))
            try:
                if handle is not None:  # refcounting frees finished executions, not the GC
                    handle.resolve(result, terminal["seq"])  # events: after delivery
            finally:
                if successor is not None:
                    self._start(successor)

    def _close_contained(self, exe: Execution, ending: Ending) -> None:
        try:
            self._close(exe, ending)
        except BaseException as exc:  # noqa: BLE001 - see _contain
            self._contain(exe, exc)

    def _contain(self, exe: Execution, error: BaseException) -> None:
        """An error in the engine's own handling of `exe`: fail it with InternalError.
        Any BaseException: user code run on this thread (a metaclass's `__instancecheck__`
        for restart_on, an output's `__del__`) may raise SystemExit or KeyboardInterrupt.

        If even closing fails, the execution is finished by hand with a bare terminal
        event, so that its handle resolves and its running slot is freed."""
        _log_contained(exe.id, error)
        if exe.id not in self._live:
            return
        ending = Ending.internal(error)
        # Every execution's stream starts with execution_started, even this one's.
        unstarted = not exe.started_event.get("seq")  # (the head's placeholder is 0)
        prefix = [{**exe.head, "type": "execution_started",
                   "node_count": len(exe.node_status), "inputs": exe.shown_inputs,
                   "priority": exe.priority}] if unstarted else []
        if not exe.closed:
            try:
                self._close(exe, ending, prefix, queued=unstarted)
                return
            except BaseException as again:  # noqa: BLE001 - as above
                _log_contained(exe.id, again)
        exe.closed = True
        exe.status = ending.status
        terminal: Event = {**exe.head, "type": ending.terminal_event,
                           "status": ending.status.value, "error": ending.error,
                           "error_type": ending.error_type, "results": {},
                           "duration_ms": exe.duration_ms(self._clock.monotonic())}
        self._sink.emit([*prefix, terminal])
        for run in list(exe.runs.values()):
            run.cancel()
        self._finish(exe, ending, terminal)


def _log_contained(execution_id: str, error: BaseException) -> None:
    log.error("supervisor_error", execution_id=execution_id, **failure_fields(error))
