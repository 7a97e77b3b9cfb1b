"""Supervisor actors: each owns many executions and drives them.

The OTP split: this module is the actor only (its inbox, a handler table, the timers it
fires, stopping), over the pure per-execution state machine in `actors/machine.py` and the
guards in `actors/guards.py`; how an execution is closed and finished is in
`actors/supervisor_closing.py`. A supervisor never blocks and never runs user code: it tells
warm node actors to run nodes and reacts to their `NodeDone` replies. Node timeouts,
restart backoffs and workflow deadlines live in one timer heap that the actor's inbox wait
honours (no thread per execution, no timer thread). Halt, cancel and shutdown arrive as
`EndExecutions`.

Whatever goes wrong while handling an execution, it ends: an error in the engine's own code
fails that execution with `InternalError`, frees its running slot and resolves its handle;
the other executions carry on.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

from actors._compat import EngineActorBase
from actors.admission import Admission
from actors.breaker import BreakerRegistry
from actors.cache import ProviderCache
from actors.clock import Clock
from actors.config import ResilienceConfig
from actors.emergency import EmergencyGate, EmergencyState
from actors.ending import Ending, ExecutionStatus
from actors.errors import type_name
from actors.events import EventSink
from actors.execution import ExecutionResult
from actors.guards import BreakerGuard, CacheGuard, RestartGuard
from actors.inbox import TimerInbox
from actors.logs import get_logger
from actors.machine import Execution, NodeRun, Step
from actors.messages import (
    CancelRuns,
    EndExecutions,
    HandOver,
    NodeDone,
    StartExecution,
    SupervisorStats,
    Tick,
)
from actors.node import CHECK_S, NodePool
from actors.reaper import Reaper
from actors.supervisor_overruns import Overruns
from actors.supervisor_timers import (
    TimerKind,
    open_execution,
    timed_run,
    timer_alive,
)
from actors.timers import TimerHeap

log = get_logger("tradeloom.supervisor")

#: After a bulk end (halt, stop), running nodes are cancelled this much later: waking a
#: thousand cooperative nodes at once would otherwise delay the acknowledgement they
#: follow. Nothing new starts meanwhile: the gate already refuses it.
CANCEL_GRACE_S = 0.002
#: ... and later still until the halt's reply is out (`HaltPriority.quiet`): a thousand
#: threads waking would keep its caller from it. At most this long after the end.
WAKE_HOLD_MAX_S = 0.1
#: Up to this many waiting nodes are woken at once, before the acknowledgement.
_WAKE_INLINE = 64
_HALT = EmergencyState.HALT


class SupervisorActor(Overruns, EngineActorBase):
    inbox_factory = TimerInbox
    direct: ClassVar[frozenset[type]] = frozenset(
        {NodeDone, StartExecution, EndExecutions, CancelRuns, SupervisorStats, Tick,
         HandOver})

    def __init__(self, *, sink: EventSink, gate: EmergencyGate, breakers: BreakerRegistry,
                 admission: Admission, resilience: ResilienceConfig, clock: Clock,
                 cache: ProviderCache, risk: Callable[..., dict[str, Any]],
                 record: Callable[[ExecutionResult], None], node_actors: int,
                 reaper: Reaper, max_stuck_runs: int) -> None:
        super().__init__()
        self._sink = sink
        self._gate = gate
        self._admission = admission
        self._clock = clock
        self._risk = risk
        self._record = record
        self._node_actors = node_actors
        self._max_stuck_runs = max_stuck_runs
        self._breaker_guard = BreakerGuard(breakers)
        self._guards = (self._breaker_guard, CacheGuard(cache))
        self._restart = RestartGuard(resilience)
        self._live: dict[str, Execution] = {}
        self._reaper = reaper
        #: What may run user code when freed, filled while handling a message, then kept
        #: one message more (`_dying`) before the reaper gets it: actors/reaper.py.
        self._graveyard: list[object] = []
        self._dying: list[object] = []
        self._timers = TimerHeap(clock, timer_alive)
        #: Executions to start, drained by the outermost _start (no recursion).
        self._to_start: deque[Execution] = deque()
        self._starting = False
        #: While ending executions in bulk: cancel Events that nodes wait on, to set after.
        self._deferred_wakes: list[threading.Event] | None = None
        inbox: TimerInbox = self.actor_inbox  # type: ignore[assignment]
        inbox.next_delay = self._timers.next_delay
        self._pool: NodePool
        self._handlers: dict[type, Callable[[Any], Any]] = {
            NodeDone: self._on_node_done,
            StartExecution: lambda m: self._start(m.execution),
            EndExecutions: self._on_end,
            CancelRuns: lambda m: _wake(m.events),
            SupervisorStats: lambda m: self._stats(),
            Tick: lambda m: None,
            HandOver: lambda m: None,  # (what it is for is done after every message)
        }

    def on_start(self) -> None:
        self._pool = NodePool(self.actor_inbox, self._gate, max_actors=self._node_actors,
                              max_stuck_runs=self._max_stuck_runs)

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:
            return super().on_receive(message)
        reply = handler(message)
        if self._timers.has_due():
            self._fire_timers()
        if self._dying or self._graveyard:
            self._pass_to_reaper()
        return reply

    def _pass_to_reaper(self) -> None:
        # A batch goes one message after it was made: by then the message it was made in
        # (a NodeDone's run holds its execution) is no longer a local of this thread, and
        # the reaper's references are the last. HandOver is that next message when
        # nothing else comes.
        if self._dying:
            self._reaper.bury(self._dying)
            self._dying = []
        if self._graveyard:
            self._dying, self._graveyard = self._graveyard, []
            self.actor_ref.tell(HandOver())

    def on_stop(self) -> None:
        # Whatever is still here ends cancelled, including starts still in the inbox (pykka
        # would drop those silently): no handle is left unresolved by a stop.
        inbox: TimerInbox = self.actor_inbox  # type: ignore[assignment]
        stopped = Ending.cancelled("engine stopped")
        while not inbox.empty():
            message = inbox.get(False).message
            if type(message) is StartExecution:
                self._to_start.append(message.execution)
        for exe in self._to_start:
            if exe.ending_on_start is None:
                exe.ending_on_start = stopped
        pending, self._to_start = list(self._to_start), deque()
        for exe in pending:
            self._start(exe)
        for exe in list(self._live.values()):
            self._close_contained(exe, stopped)
        self._pool.stop_all()
        self._reaper.bury([*self._dying, *self._graveyard])
        self._dying, self._graveyard = [], []

    # -- handlers --------------------------------------------------------------------------

    def _on_node_done(self, done: NodeDone) -> None:
        run = done.run
        if (run.abandoned or run.execution.closed) and (
                run.user_object or run.execution.holds_user_objects()):
            self._graveyard.append(run)  # late: this message may hold the last reference
        if run.abandoned:
            self._pool.retired(run)
            if run.denied is None and run.node.category == "action":
                self._late_action(run, run.abandoned_why)
            return
        self._pool.done()
        try:
            self._node_answered(run)
        except BaseException as exc:  # noqa: BLE001 - never strand the execution: see _contain
            self._contain(run.execution, exc)

    def _on_end(self, message: EndExecutions) -> int:
        ending = message.ending
        if message.execution_id is not None:
            exe = self._live.get(message.execution_id)
            targets = [exe] if exe is not None else []
        else:
            targets = list(self._live.values())
        if ending.status is ExecutionStatus.HALTED:
            targets = [exe for exe in targets if not exe.exempt_from_halt]
        self._deferred_wakes = []
        try:
            for exe in targets:
                self._close_contained(exe, ending)
        finally:
            wakes, self._deferred_wakes = self._deferred_wakes, None
        if len(wakes) <= _WAKE_INLINE:
            _wake(wakes)
        elif self._clock.real:
            # Many nodes wait on their cancel Event (every node reads ctx.cancelled as set
            # already; these fetched the Event before): wake them just after the ack.
            self._timers.push(self._clock.monotonic() + CANCEL_GRACE_S, TimerKind.WAKE,
                              tuple(wakes), time.monotonic() + WAKE_HOLD_MAX_S)
        else:
            self.actor_ref.tell(CancelRuns(tuple(wakes)))
        return len(targets)

    def _stats(self) -> dict[str, int]:
        pool = self._pool
        return {"live": len(self._live), "node_actors": pool.size,
                "node_actors_started": pool.started, "node_actors_abandoned": pool.abandoned,
                "runs_in_flight": pool.busy, "timers": len(self._timers)}

    # -- starting --------------------------------------------------------------------------

    def _start(self, exe: Execution) -> None:
        """Start an execution; successors queued while starting run from this loop, so an
        execution that ends at once (cache hit, open breaker, HALT) never recurses."""
        self._to_start.append(exe)
        if self._starting:
            return
        self._starting = True
        try:
            while self._to_start:
                exe = self._to_start.popleft()
                try:
                    self._start_one(exe)
                except BaseException as exc:  # noqa: BLE001 - see _contain
                    self._contain(exe, exc)
        finally:
            self._starting = False

    def _start_one(self, exe: Execution) -> None:
        now = self._clock.monotonic()
        self._live[exe.id] = exe
        started = exe.start(now)
        if (exe.ending_on_start is None and exe.admitted_in != self._admission.halts
                and not exe.exempt_from_halt):
            # Admitted before a halt that came before its start (a resume may have come
            # since): it was running at the halt, as far as anyone was told.
            exe.ending_on_start = Ending.halted("the engine was halted before it started")
        if exe.ending_on_start is not None:
            self._close(exe, exe.ending_on_start, [started], queued=True)
            return
        with self._sink.lock:  # HALT and execution_started in one step: never after HALT
            halted = self._gate.state is _HALT and not exe.exempt_from_halt
            if not halted:
                self._sink.emit_locked([started])
        if halted:
            self._close(exe, Ending.halted("the engine is in HALT"), [started], queued=True)
            return
        timeout_s = exe.workflow.timeout_s
        if timeout_s is not None:
            self._timers.push(now + timeout_s, TimerKind.DEADLINE, weakref.ref(exe))
        for i in exe.workflow.roots:
            if exe.closed:
                break
            self._dispatch(exe, i)

    # -- running nodes ---------------------------------------------------------------------

    def _dispatch(self, exe: Execution, i: int) -> None:
        outputs = exe.outputs
        run = NodeRun(exe, i, exe.attempts[i] + 1,
                      {a: outputs[a] for a in exe.workflow.closure.ancestor_ids(i)}, self._risk)
        for guard in self._guards:
            verdict = guard.before_dispatch(run)
            if verdict is not None:
                if verdict.refused:
                    self._apply(exe, exe.circuit_open(i))
                else:
                    self._cached(exe, run, verdict.value, verdict.shown)
                return
        exe.dispatched(run)
        now = self._clock.monotonic()
        self._timers.push(now + self._restart.timeout_s(run.node), TimerKind.NODE_TIMEOUT,
                          weakref.ref(run))
        if self._pool.run(run):
            self._pool.checking = True
            self._timers.push(now + CHECK_S, TimerKind.POOL_CHECK, self._pool)

    def _cached(self, exe: Execution, run: NodeRun, value: Any, shown: Any) -> None:
        node = run.node
        with self._sink.lock:
            halted = self._gate.state is _HALT and not exe.exempt_from_halt
            if not halted:
                self._sink.emit_locked([{
                    **exe.head, "type": "node_started", "node_id": node.id,
                    "node_name": node.name, "node_category": node.category, "attempt": 1,
                    "cached": True}])
        if halted:
            self._close(exe, Ending.halted("the engine is in HALT"))
        else:
            self._apply(exe, exe.succeeded(run.index, value, 0.0, 1, self._clock.monotonic(),
                                           cached=True, shown=shown,
                                           user_object=shown is not value))

    def _node_answered(self, run: NodeRun) -> None:
        exe = run.execution
        exe.answered(run)
        error = run.error
        try:
            for guard in self._guards:
                guard.after_run(run, error)
        finally:  # (a guard that raised leaves none held for another run's batch)
            held = self._breaker_guard.take_held()
        try:
            if run.denied is not None or exe.closed:
                if run.denied is not None:
                    if not exe.closed:
                        self._apply(exe, exe.denied(run.index, run.denied,
                                                    self._clock.monotonic()))
                elif run.node.category == "action":
                    self._late_action(run, "its execution had ended")
                return
            if error is None:
                step = exe.succeeded(run.index, run.value, run.duration_s, run.attempt,
                                     self._clock.monotonic(), truth=run.truth,
                                     shown=run.shown, user_object=run.user_object)
            else:
                step = self._failure(exe, run, error, run.error_text, run.duration_s)
            if held:  # the breaker's change after the outcome that caused it
                step.events[1:1], held = held, []
            self._apply(exe, step)
        finally:  # not placed after its cause (or that failed): published all the same
            if held:
                self._sink.emit(held)

    def _failure(self, exe: Execution, run: NodeRun, error: BaseException, text: str,
                 duration_s: float) -> Step:
        now = self._clock.monotonic()
        i = run.index
        delay = self._restart.retry_delay_s(run.node, error, exe.restarts.setdefault(i, []),
                                            now)
        error_type = type_name(error)
        if delay is not None and self._breaker_guard.refuses_retry(run.node, delay):
            # "While open such nodes are skipped at once": not after the backoff.
            return exe.failed_circuit_open(i, text, error_type, duration_s, run.attempt)
        if delay is not None:
            self._timers.push(now + delay, TimerKind.RETRY, weakref.ref(exe), (i, run.attempt))
            log.info("node_retrying", execution_id=exe.id, node_id=run.node.id,
                     attempt=run.attempt + 1, delay_s=delay, error_type=error_type)
        return exe.failed(i, text, error_type, duration_s, run.attempt, delay)

    def _apply(self, exe: Execution, step: Step) -> None:
        if step.ending is not None:
            self._close(exe, step.ending, step.events, step.failed_node)
            return
        if step.events:
            self._sink.emit(step.events)
        for j in step.ready:
            if exe.closed:
                break
            self._dispatch(exe, j)

    # -- timers ----------------------------------------------------------------------------

    def _fire_timers(self) -> None:
        for kind, target, arg in self._timers.pop_due():
            if kind is TimerKind.POOL_CHECK:
                delay = target.grow()
                if delay is not None:
                    self._timers.push(self._clock.monotonic() + delay,
                                      TimerKind.POOL_CHECK, target)
            elif kind is TimerKind.WAKE:
                now = time.monotonic()  # (the halt's clock, not the engine's)
                if not self._gate.priority.quiet(now) and now < arg:
                    self._timers.push(self._clock.monotonic() + CANCEL_GRACE_S,
                                      TimerKind.WAKE, target, arg)
                else:
                    _wake(target)
            elif kind is TimerKind.NODE_TIMEOUT or kind is TimerKind.CANCELLED_RUN:
                run = timed_run(target)
                if run is not None:
                    try:
                        if kind is TimerKind.NODE_TIMEOUT:
                            self._timed_out(run)
                        else:
                            self._still_running(run)
                    except BaseException as exc:  # noqa: BLE001 - see _contain
                        self._contain(run.execution, exc)
            else:
                exe = open_execution(target)
                if exe is not None:
                    try:
                        self._fire_execution_timer(kind, exe, arg)
                    except BaseException as exc:  # noqa: BLE001 - see _contain
                        self._contain(exe, exc)

    def _fire_execution_timer(self, kind: int, exe: Execution, arg: Any) -> None:
        if kind is TimerKind.RETRY:
            i, attempt = arg
            if exe.attempts[i] == attempt:
                self._dispatch(exe, i)
        else:
            self._close(exe, Ending.timed_out(exe.workflow.timeout_s))


def _wake(events: Any) -> None:
    for event in events:
        event.set()

