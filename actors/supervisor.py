"""Supervisor actors: each owns many executions and drives their DAGs.

A supervisor never blocks and never runs user code. It tells warm node actors to run nodes
and reacts to their `NodeDone` replies; timeouts, restart backoffs and workflow deadlines
live in one timer heap that the actor's inbox wait honours (no thread per execution, no
timer thread). Halt, cancel and shutdown arrive as `EndExecutions`.

Fail fast: once a node fails finally the execution closes at once; nodes not started are
skipped, running ones get `ctx.cancelled`, and whatever they return later is discarded.
Closing happens under the sequencing lock, so a node is either published as started (and
then cancelled) or as skipped, never both, and nothing follows the terminal event.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import pykka
import structlog

from actors import execution as ex
from actors.admission import Admission
from actors.breaker import Admit, BreakerRegistry
from actors.cache import ProviderCache
from actors.clock import Clock
from actors.config import ResilienceConfig
from actors.emergency import EmergencyGate, EmergencyState
from actors.errors import CircuitOpen, ExecutionTimeout, NodeTimeout
from actors.events import Event, EventSink
from actors.execution import Execution, ExecutionResult, NodeRun
from actors.inbox import TimerInbox
from actors.messages import (
    CancelRuns,
    EndExecutions,
    NodeDone,
    StartExecution,
    SupervisorStats,
    Tick,
)
from actors.node import CHECK_S, NodePool
from actors.restart import RestartPolicy, policy_for
from actors.timers import Entry, TimerHeap
from actors.workflow import Node

log = structlog.get_logger("tradeloom.supervisor")
_TIMEOUT, _RETRY, _DEADLINE, _POOL, _CANCEL = 0, 1, 2, 3, 4
#: After a bulk end (halt, stop), running nodes are cancelled this much later: waking a
#: thousand cooperative nodes at once would otherwise delay the acknowledgement they
#: follow. Nothing new starts meanwhile: the gate already refuses it.
CANCEL_GRACE_S = 0.002
#: Up to this many waiting nodes are woken at once, before the acknowledgement.
_WAKE_INLINE = 64


class SupervisorActor(pykka.ThreadingActor):
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return TimerInbox()

    def __init__(self, *, sink: EventSink, gate: EmergencyGate, breakers: BreakerRegistry,
                 admission: Admission, resilience: ResilienceConfig, clock: Clock,
                 cache: ProviderCache, risk: Callable[..., dict[str, Any]],
                 record: Callable[[ExecutionResult], None], node_actors: int) -> None:
        super().__init__()
        self._sink = sink
        self._gate = gate
        self._breakers = breakers
        self._admission = admission
        self._resilience = resilience
        self._clock = clock
        self._cache = cache
        self._risk = risk
        self._record = record
        self._node_actors = node_actors
        self._live: dict[str, Execution] = {}
        self._timers = TimerHeap(clock, _timer_alive)
        #: Executions to start, drained by the outermost _start (no recursion).
        self._to_start: deque[Execution] = deque()
        self._starting = False
        #: While ending executions in bulk: cancel Events that nodes wait on, to set after.
        self._deferred_cancels: list[threading.Event] | None = None
        cast(TimerInbox, self.actor_inbox).next_delay = self._timers.next_delay
        self._pool: NodePool

    def on_start(self) -> None:
        self._pool = NodePool(self.actor_inbox, self._gate, max_actors=self._node_actors)

    def on_stop(self) -> None:
        # Whatever is still here ends cancelled, including starts still in the inbox (pykka
        # would drop those silently): no handle is left unresolved by a stop.
        inbox = cast(TimerInbox, self.actor_inbox)
        while not inbox.empty():
            message = inbox.get(False).message
            if type(message) is StartExecution:
                self._to_start.append(message.execution)
        for exe in [*self._to_start, *self._live.values()]:
            if exe.end_on_start is None and exe.id not in self._live:
                exe.end_on_start = (ex.CANCELLED, "cancelled: engine stopped", "Cancelled",
                                    "cancelled")
        pending, self._to_start = list(self._to_start), deque()
        for exe in pending:
            self._start(exe)
        for exe in list(self._live.values()):
            self._close(exe, ex.CANCELLED, "cancelled: engine stopped", "Cancelled",
                        "cancelled")
        self._pool.stop_all()

    # -- messages --------------------------------------------------------------------------

    def _handle_receive(self, message: Any) -> Any:
        # The hot messages skip pykka's isinstance chain (stop/proxy calls), which
        # otherwise runs for every NodeDone.
        if type(message) is NodeDone:
            try:
                self._node_done(message)
                if self._timers.has_due():
                    self._fire_timers()
            except Exception:
                log.exception("supervisor_error", message="NodeDone")
            return None
        return super()._handle_receive(message)

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        except Exception:
            # A supervisor owns many executions: one bad message must not strand them all.
            log.exception("supervisor_error", message=type(message).__name__)
            return None

    def _handle(self, message: Any) -> Any:
        kind = type(message)
        reply: Any = None
        if kind is NodeDone:
            self._node_done(message)
        elif kind is StartExecution:
            self._start(message.execution)
        elif kind is EndExecutions:
            reply = self._end(message)
        elif kind is CancelRuns:
            for event in message.events:
                event.set()
        elif kind is SupervisorStats:
            reply = {"live": len(self._live), "node_actors": self._pool.size,
                     "node_actors_started": self._pool.started,
                     "node_actors_abandoned": self._pool.abandoned,
                     "runs_in_flight": self._pool.busy, "timers": len(self._timers)}
        elif kind is not Tick:
            return super().on_receive(message)
        if self._timers.has_due():
            self._fire_timers()
        return reply

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
                except Exception as exc:
                    # Never strand an execution (and its running slot) on an internal error.
                    log.exception("execution_start_failed", execution_id=exe.id)
                    if not exe.closed and exe.id in self._live:
                        self._close(exe, ex.FAILED, f"internal error: {exc!r}",
                                    "InternalError", "cancelled")
        finally:
            self._starting = False

    def _start_one(self, exe: Execution) -> None:
        now = self._clock.monotonic()
        exe.status = ex.RUNNING
        exe.started_mono = now
        exe.started_wall = self._clock.time()
        self._live[exe.id] = exe
        wf = exe.workflow
        started = {**exe.head, "type": "execution_started", "node_count": len(wf.nodes),
                   "inputs": exe.inputs, "priority": exe.priority}
        exe.started_event = started
        if exe.end_on_start is not None:
            status, error, error_type, skip_reason = exe.end_on_start
            self._close(exe, status, error, error_type, skip_reason, prefix=[started])
            return
        with self._sink.lock:  # HALT and execution_started in one step: never after HALT
            halted = self._gate.state is EmergencyState.HALT
            halted = halted and not exe.exempt_from_halt  # kill-switch: on-halt hooks run
            if not halted:
                self._sink.emit_locked([started])
        if halted:
            self._close(exe, ex.HALTED, "halted: the engine is in HALT", "Halted", "halted",
                        prefix=[started])
            return
        if wf.timeout_s is not None:
            self._timers.push(now + wf.timeout_s, _DEADLINE, exe, None)
        for i in wf.roots:
            if exe.closed:
                break
            self._dispatch(exe, i)

    def _end(self, message: EndExecutions) -> int:
        if message.execution_id is not None:
            exe = self._live.get(message.execution_id)
            targets = [exe] if exe is not None else []
        else:
            targets = list(self._live.values())
            if message.status == ex.HALTED:  # kill-switch: on-halt hooks outlive the halt
                targets = [exe for exe in targets if not exe.exempt_from_halt]
        self._deferred_cancels = []
        try:
            for exe in targets:
                self._close(exe, message.status, message.error, message.error_type,
                            message.skip_reason)
        finally:
            runs, self._deferred_cancels = self._deferred_cancels, None
        if len(runs) <= _WAKE_INLINE:
            for event in runs:
                event.set()
        elif self._clock.real:
            # Many nodes wait on their cancel Event (every node reads ctx.cancelled as set
            # already; these fetched the Event before): wake them just after the ack.
            self._timers.push(self._clock.monotonic() + CANCEL_GRACE_S, _CANCEL, tuple(runs))
        else:
            self.actor_ref.tell(CancelRuns(tuple(runs)))
        return len(targets)

    # -- running nodes ---------------------------------------------------------------------

    def _policy(self, node: Node) -> RestartPolicy:
        cached = node._policy
        if cached is not None and cached[0] is self._resilience:
            policy: RestartPolicy = cached[1]
            return policy
        policy = policy_for(node, self._resilience)
        node._policy = (self._resilience, policy)
        return policy

    def _dispatch(self, exe: Execution, i: int) -> None:
        node = exe.workflow.nodes[i]
        trial = False
        if node.breaker is not None:
            verdict = self._breakers.get(node.breaker).admit()
            if verdict is Admit.REJECT:
                exe.node_status[i] = ex.N_SKIPPED
                exe.finished += 1
                exe.errors[node.id] = (f"circuit {node.breaker!r} is open", "CircuitOpen")
                skipped = {**exe.head, "type": "node_skipped", "node_id": node.id,
                           "reason": "circuit_open"}
                error = CircuitOpen(f"node {node.id!r}: circuit {node.breaker!r} is open")
                self._close(exe, ex.FAILED, str(error), "CircuitOpen", "cancelled",
                            prefix=[skipped], failed=i)
                return
            trial = verdict is Admit.TRIAL
        if node.cache_ttl_s is not None and not trial:
            hit, value = self._cache.get(exe.workflow.id, node.id, exe.inputs)
            if hit:
                self._cached(exe, i, value)
                return
        attempt = exe.attempts[i] + 1
        exe.attempts[i] = attempt
        outputs = exe.outputs
        upstream = {a: outputs[a] for a in exe.workflow.ancestors[i]}
        now = self._clock.monotonic()
        run = NodeRun(exe, i, attempt, upstream, self._risk, now, trial)
        exe.runs[i] = run
        exe.node_status[i] = ex.N_RUNNING
        self._timers.push(now + self._policy(node).timeout_s, _TIMEOUT, run, None)
        if self._pool.run(run):
            self._pool.checking = True
            self._timers.push(now + CHECK_S, _POOL, self._pool)

    def _cached(self, exe: Execution, i: int, value: Any) -> None:
        node = exe.workflow.nodes[i]
        exe.attempts[i] = 1
        with self._sink.lock:
            # kill-switch: on-halt hooks run in HALT
            if self._gate.state is EmergencyState.HALT and not exe.exempt_from_halt:
                refused = True
            else:
                refused = False
                self._sink.emit_locked([{
                    **exe.head, "type": "node_started", "node_id": node.id,
                    "node_name": node.name, "node_category": node.category, "attempt": 1,
                    "cached": True}])
        if refused:
            self._close(exe, ex.HALTED, "halted: the engine is in HALT", "Halted", "halted")
        else:
            self._succeeded(exe, i, value, 0.0, 1, cached=True)

    def _node_done(self, done: NodeDone) -> None:
        run = done.run
        exe = run.execution
        node = run.node
        if run.abandoned:
            self._pool.retired(run)
            if run.refused is None and node.category == "action":
                self._late_action(run, "timed out")
            return
        self._pool.done()
        if exe.runs.get(run.index) is run:
            del exe.runs[run.index]
        if run.refused is not None:
            if run.trial:
                self._breakers.get(node.breaker).release_trial()  # type: ignore[arg-type]
            if not exe.closed:
                exe.node_status[run.index] = ex.N_PENDING  # it never started
                self._refused(exe, run.index, run.refused)
            return
        if node.breaker is not None:
            self._breakers.get(node.breaker).record(run.error is None, trial=run.trial)
        if exe.closed:
            if node.category == "action":
                self._late_action(run, "its execution had ended")
            return
        if run.error is None:
            self._succeeded(exe, run.index, run.value, run.duration_s, run.attempt)
        else:
            self._failed(exe, run, run.error, run.duration_s)

    def _refused(self, exe: Execution, i: int, reason: str) -> None:
        if reason == "halted":
            self._close(exe, ex.HALTED, "halted: the engine is in HALT", "Halted", "halted")
            return
        if reason != "reduce_only":
            self._close(exe, ex.FAILED, f"node {exe.workflow.nodes[i].id!r} could not start: "
                        f"{reason}", "InternalError", "cancelled")
            return
        # reduce_only: this action and what depends on it are skipped; the rest goes on.
        self._advance(exe, exe.skip_with_descendants(i, reason), ())

    def _succeeded(self, exe: Execution, i: int, value: Any, duration_s: float, attempt: int,
                   *, cached: bool = False) -> None:
        wf = exe.workflow
        node = wf.nodes[i]
        exe.node_status[i] = ex.N_COMPLETED
        exe.outputs[node.id] = value
        exe.completed += 1
        exe.finished += 1
        completed: Event = {
            **exe.head, "type": "node_completed", "node_id": node.id,
            "duration_ms": round(duration_s * 1000.0, 3), "status": "success",
            "outputs": value, "attempt": attempt}
        if cached:
            completed["cached"] = True
        elif node.cache_ttl_s is not None:
            self._cache.put(wf.id, node.id, exe.inputs, value, node.cache_ttl_s)
        events = [completed]
        ready: list[int] = []
        if node.category == "condition" and not value:
            for j in wf.descendants[i]:
                if exe.node_status[j] == ex.N_PENDING:
                    events.append(exe.skip(j, "condition_false"))
        else:
            remaining, status = exe.remaining, exe.node_status
            for j in wf.dependents[i]:
                remaining[j] -= 1
                if remaining[j] == 0 and status[j] == ex.N_PENDING:
                    ready.append(j)
        self._advance(exe, events, ready)

    def _advance(self, exe: Execution, events: list[Event], ready: Any) -> None:
        if exe.finished == len(exe.node_status):
            # The terminal event follows in the same batch and says all a progress would.
            self._close(exe, ex.COMPLETED, None, None, "cancelled", prefix=events)
            return
        events.append(exe.progress(self._clock.monotonic()))
        self._sink.emit(events)
        for j in ready:
            if exe.closed:
                break
            self._dispatch(exe, j)

    def _failed(self, exe: Execution, run: NodeRun, error: BaseException,
                duration_s: float) -> None:
        i = run.index
        node = run.node
        policy = self._policy(node)
        error_type = type(error).__name__
        now = self._clock.monotonic()
        restart = (policy.restartable(error)
                   and policy.allows_restart(exe.restarts.setdefault(i, []), now))
        failed: Event = {
            **exe.head, "type": "node_failed", "node_id": node.id,
            "duration_ms": round(duration_s * 1000.0, 3), "error": str(error) or error_type,
            "error_type": error_type, "attempt": run.attempt, "final": not restart}
        if not restart:
            exe.node_status[i] = ex.N_FAILED
            exe.finished += 1
            exe.errors[node.id] = (failed["error"], error_type)
            self._close(exe, ex.FAILED, failed["error"], error_type, "cancelled",
                        prefix=[failed], failed=i)
            return
        restarts = exe.restarts[i]
        restarts.append(now)
        delay = policy.delay_s(len(restarts))
        exe.node_status[i] = ex.N_PENDING
        self._timers.push(now + delay, _RETRY, exe, (i, run.attempt))
        self._sink.emit([failed, {
            **exe.head, "type": "node_retrying", "node_id": node.id,
            "attempt": run.attempt + 1, "delay_ms": round(delay * 1000.0, 3),
            "error_type": error_type}])
        log.info("node_retrying", execution_id=exe.id, node_id=node.id,
                 attempt=run.attempt + 1, delay_s=delay, error_type=error_type)

    def _late_action(self, run: NodeRun, why: str) -> None:
        # Never published as success; kept for reconciliation against the exchange.
        log.warning("late_action_result", execution_id=run.execution.id,
                    node_id=run.node.id, idempotency_key=run.idempotency_key, why=why,
                    ok=run.error is None, value=repr(run.value)[:200],
                    error=None if run.error is None else repr(run.error)[:200])

    # -- timers ----------------------------------------------------------------------------

    def _fire_timers(self) -> None:
        for kind, target, arg in self._timers.pop_due():
            if kind == _TIMEOUT:
                self._timed_out(target)
            elif kind == _CANCEL:
                for event in target:
                    event.set()
            elif kind == _POOL:
                if target.grow():
                    self._timers.push(self._clock.monotonic() + CHECK_S, _POOL, target)
            elif kind == _RETRY:
                i, attempt = arg
                if not target.closed and target.attempts[i] == attempt:
                    self._dispatch(target, i)
            elif not target.closed:
                self._close(target, ex.FAILED,
                            f"execution overran the workflow timeout_s="
                            f"{target.workflow.timeout_s}", ExecutionTimeout.__name__,
                            "cancelled")

    def _timed_out(self, run: NodeRun) -> None:
        exe = run.execution
        if exe.runs.get(run.index) is not run:
            return  # answered in time
        timeout_s = self._policy(run.node).timeout_s
        now = self._clock.monotonic()
        if not run.started:
            # Still waiting in the mailbox (every actor busy) or refused on its way in: the
            # clock runs from when the node starts. The workflow's timeout_s bounds the wait.
            if not exe.closed:
                self._timers.push(now + timeout_s, _TIMEOUT, run)
            return
        if run.started_at + timeout_s > now:
            self._timers.push(run.started_at + timeout_s, _TIMEOUT, run)
            return
        if not self._pool.abandon(run):
            return  # it returned just now; its NodeDone is in the inbox
        del exe.runs[run.index]
        run.cancel()
        if run.node.breaker is not None:
            self._breakers.get(run.node.breaker).record(False, trial=run.trial)
        log.warning("node_timeout", execution_id=exe.id, node_id=run.node.id,
                    timeout_s=timeout_s, attempt=run.attempt, execution_closed=exe.closed)
        if exe.closed:
            return  # its execution already ended: nothing more is published for it
        self._failed(exe, run, NodeTimeout(f"node {run.node.id!r} did not finish within "
                                           f"{timeout_s:g} s"), timeout_s)

    # -- closing ---------------------------------------------------------------------------

    def _close(self, exe: Execution, status: str, error: str | None, error_type: str | None,
               skip_reason: str, *, prefix: list[Event] | None = None,
               failed: int | None = None) -> None:
        if exe.closed:
            return
        wf = exe.workflow
        downstream = set(wf.descendants[failed]) if failed is not None else ()
        duration_ms = round((self._clock.monotonic() - exe.started_mono) * 1000.0, 3)
        events = prefix or []
        terminal: Event = {**exe.head, "type": ex.TERMINAL_EVENT[status],
                           "duration_ms": duration_ms, "status": status,
                           "results": exe.outputs}
        if status != ex.COMPLETED:
            terminal["error"] = error
            terminal["error_type"] = error_type
        with self._sink.lock:
            exe.closed = True
            for run in exe.close_nodes(skip_reason, downstream, events):
                if self._deferred_cancels is None:
                    run.cancel()
                else:
                    event = run.request_cancel()
                    if event is not None:
                        self._deferred_cancels.append(event)
            events.append(terminal)
            self._sink.emit_locked(events)
            ended_at = terminal["timestamp"]
        exe.status = status
        del self._live[exe.id]
        result = ExecutionResult(
            execution_id=exe.id, workflow_id=wf.id, status=status, results=exe.outputs,
            error=error, error_type=error_type, duration_ms=duration_ms,
            started_at=exe.started_event["timestamp"], ended_at=ended_at, execution=exe)
        if status == ex.FAILED:
            log.warning("execution_failed", execution_id=exe.id, workflow_id=wf.id,
                        error_type=error_type, error=error)
        self._record(result)
        successor = self._admission.finish(status)
        handle, exe.handle = exe.handle, None  # no cycle exe -> handle -> result -> exe:
        try:
            if handle is not None:  # refcounting frees finished executions, not the GC
                handle._resolve(result)
        finally:
            if successor is not None:
                self._start(successor)


def _timer_alive(timer: Entry) -> bool:
    _, _, kind, target, _ = timer
    if kind == _TIMEOUT:
        return not target.abandoned and target.execution.runs.get(target.index) is target
    if kind in (_POOL, _CANCEL):
        return True
    return not target.closed
