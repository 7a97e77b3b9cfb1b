"""Runs that overran or outlived their execution, for `SupervisorActor` (a mixin, as
`ExecutionClosing`): a node past its `timeout_s`, or still running ABANDON_AFTER_CANCEL_S
after its execution ended, is abandoned (a Python thread cannot be killed): its actor stops
counting as capacity and a replacement starts when runs wait; the actor retires if its
function ever returns, and an action's late result is journaled, never published.
"""

from __future__ import annotations

import reprlib
import weakref
from collections.abc import Callable

from actors.emergency import EmergencyGate
from actors.errors import NodeTimeout
from actors.guards import BreakerGuard, CacheGuard, RestartGuard
from actors.machine import Execution, NodeRun, Step
from actors.node import CHECK_S, NodePool
from actors.supervisor_closing import ExecutionClosing, log
from actors.supervisor_timers import ABANDON_AFTER_CANCEL_S, TimerKind

__all__ = ["Overruns"]


class Overruns(ExecutionClosing):
    """Abandoning overrun runs, for `SupervisorActor` (which has what is declared here)."""

    _pool: NodePool
    _gate: EmergencyGate
    _guards: tuple[BreakerGuard | CacheGuard, ...]
    _breaker_guard: BreakerGuard
    _restart: RestartGuard
    _apply: Callable[[Execution, Step], None]
    _failure: Callable[[Execution, NodeRun, BaseException, str, float], Step]

    def _still_running(self, run: NodeRun) -> None:
        """ABANDON_AFTER_CANCEL_S after its execution ended, `run` has not come back: a
        stuck node. Its actor is given up as a timed-out one is (a replacement starts when
        runs wait), so it holds no other execution (an on-halt hook) up to its timeout_s."""
        if not run.started or not self._abandon(run):
            return
        run.abandoned_why = "its execution had ended"
        exe = run.execution
        exe.answered(run)
        # A halt's or a cancel's: no outcome (a trial's turn freed). The workflow's deadline:
        # the venue had not answered by then, a failure as a node timeout is.
        error = NodeTimeout(f"node {run.node.id!r} still running past its workflow's "
                            "timeout_s") if exe.past_deadline else None
        try:
            for guard in self._guards:
                guard.after_run(run, error)
        finally:
            held = self._breaker_guard.take_held()
            if held:
                self._sink.emit(held)
        log.warning("node_abandoned", execution_id=run.execution.id, node_id=run.node.id,
                    attempt=run.attempt, after_cancel_s=ABANDON_AFTER_CANCEL_S)

    def _abandon(self, run: NodeRun) -> bool:
        """Give `run`'s actor up (False: it came back just now; its NodeDone is coming)."""
        if not self._pool.abandon(run):
            return False
        if self._pool.check_due():  # its replacement was refused, and runs wait
            self._pool.checking = True
            self._timers.push(self._clock.monotonic() + CHECK_S, TimerKind.POOL_CHECK,
                              self._pool)
        return True

    def _timed_out(self, run: NodeRun) -> None:
        exe = run.execution
        timeout_s = self._restart.timeout_s(run.node)
        now = self._clock.monotonic()
        if not run.started:
            # Still waiting in the mailbox (every actor busy) or refused on its way in: the
            # clock runs from when the node starts. The workflow's timeout_s bounds the wait.
            if not exe.closed:
                self._timers.push(now + timeout_s, TimerKind.NODE_TIMEOUT, weakref.ref(run))
            return
        if run.started_at + timeout_s > now:
            self._timers.push(run.started_at + timeout_s, TimerKind.NODE_TIMEOUT,
                              weakref.ref(run))
            return
        if not self._abandon(run):
            return  # it returned just now; its NodeDone is in the inbox
        exe.answered(run)
        run.cancel()
        error = NodeTimeout(f"node {run.node.id!r} did not finish within {timeout_s:g} s")
        try:
            for guard in self._guards:
                guard.after_run(run, error)
        finally:
            held = self._breaker_guard.take_held()
        log.warning("node_timeout", execution_id=exe.id, node_id=run.node.id,
                    timeout_s=timeout_s, attempt=run.attempt, execution_closed=exe.closed)
        try:
            if not exe.closed:  # else it already ended: nothing more is published for it
                step = self._failure(exe, run, error, str(error), timeout_s)
                step.events[1:1], held = held, []  # the breaker's change after node_failed
                self._apply(exe, step)
        finally:
            if held:
                self._sink.emit(held)

    def _late_action(self, run: NodeRun, why: str) -> None:
        # Never published as success; kept for reconciliation against the exchange.
        intents = self._gate.intents
        if intents is not None:
            intents.late_result(run, why)
        log.warning("late_action_result", execution_id=run.execution.id,
                    node_id=run.node.id, idempotency_key=run.idempotency_key, why=why,
                    ok=run.error is None, value=_SHORT.repr(run.shown),
                    error=None if run.error is None else run.error_text)


#: A late value as its event form (`run.shown`, plain data made on the node's thread: no
#: user `__repr__` runs here, where it would hold up every execution and the halt), cut
#: short before it is built whole.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 200
