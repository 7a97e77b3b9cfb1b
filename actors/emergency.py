"""The kill switch: NORMAL / ALERT / REDUCE_ONLY / HALT, risk limits, halt broadcast.

Two parts. `EmergencyGate` is the state itself, shared by every node actor: a node is
admitted to start under the engine's sequencing lock, the same lock under which the state
changes and its event is sequenced, so no action starts after HALT is in the stream.
`EmergencyActor` is the kill switch's mailbox: state changes by message, risk updates, and
the broadcast that tells every supervisor to end its executions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import pykka
import structlog

from actors.clock import Clock
from actors.ending import Ending
from actors.errors import ResumeRefused
from actors.events import Event, EventSink
from actors.messages import (
    Alert,
    BroadcastHalt,
    EndExecutions,
    Halt,
    ReduceOnly,
    Resume,
    RiskUpdate,
    StartExecution,
)
from actors.risk import RiskBook, Verdict

if TYPE_CHECKING:
    from actors.admission import Admission
    from actors.machine import NodeRun

log = structlog.get_logger("tradeloom.emergency")


class EmergencyState(StrEnum):
    NORMAL = "NORMAL"
    ALERT = "ALERT"
    REDUCE_ONLY = "REDUCE_ONLY"
    HALT = "HALT"


class EmergencyGate:
    """The emergency state and the check every node passes on its way to start."""

    def __init__(self, sink: EventSink, book: RiskBook, clock: Clock) -> None:
        self._sink = sink
        #: The sequencing lock: the state and the risk book change only under it.
        self.lock = sink.lock
        self._clock = clock
        self.book = book
        self.state = EmergencyState.NORMAL
        self.reason: str | None = None
        self.source: str | None = None
        self.changed_at: str | None = None
        #: Actions admitted whose function has not been entered yet.
        self.starting = 0
        #: Called (outside the lock) when the gate halts by itself (action_rate breach).
        self.on_self_halt: Callable[[str], None] = lambda reason: None

    def snapshot(self) -> dict[str, Any]:
        """The kill switch's durable state: emergency state and every limit's figures."""
        with self.lock:
            return {"state": self.state.value, "reason": self.reason, "source": self.source,
                    "limits": self.book.snapshot()}

    def restore(self, saved: dict[str, Any]) -> None:
        """Put back a snapshot at start-up, before anything runs: an engine restarted
        while halted comes back halted. Publishes nothing (nothing changed)."""
        with self.lock:
            self.state = EmergencyState(saved["state"])
            self.reason, self.source = saved.get("reason"), saved.get("source")
            self._sink.state = self.state.value
            self.book.restore(saved.get("limits", {}))

    def admit(self, run: NodeRun, started_event: Event) -> str | None:
        """Mark `run` started and publish `started_event`, or say why it may not start."""
        is_action = run.node.category == "action"
        while True:
            with self.lock:
                if run.execution.closed or run.abandoned:
                    return "closed"
                state = self.state
                if state is EmergencyState.HALT:
                    return "halted"
                wait = 0.0
                if is_action:
                    if state is EmergencyState.REDUCE_ONLY and not run.node.reduces_risk:
                        return "reduce_only"
                    if self.book.action_rate_limits:
                        verdicts, wait = self.book.note_action(self._clock.monotonic())
                        halt_reason = self._apply_verdicts_locked(verdicts)
                        if halt_reason is not None:
                            break
                    if wait <= 0:
                        self.starting += 1
                if wait <= 0:
                    run.started_at = self._clock.monotonic()  # before `started`: read unlocked
                    run.started = True
                    self._sink.emit_locked([started_event])
                    return None
            # Over a rate limit without auto_halt: wait for the window (or a cancel), retry.
            run.cancelled.wait(wait)
        self.on_self_halt(halt_reason)
        return "halted"

    def action_begun(self) -> None:
        """The admitted action's function is being entered now."""
        with self.lock:
            self.starting -= 1
            if self.starting == 0:
                self._sink.changed.notify_all()

    def wait_actions_begun(self, timeout: float) -> bool:
        """Wait until every admitted action has entered its function."""
        with self.lock:
            return self._sink.changed.wait_for(lambda: self.starting == 0, timeout)

    def transition(self, new: EmergencyState, reason: str | None, source: str,
                   extra_events: Sequence[Event] = ()) -> tuple[EmergencyState, bool]:
        with self.lock:
            return self._transition_locked(new, reason, source, extra_events)

    def _transition_locked(self, new: EmergencyState, reason: str | None, source: str,
                           extra_events: Sequence[Event] = ()) -> tuple[EmergencyState, bool]:
        previous = self.state
        events = list(extra_events)
        if new is not previous:
            self.state = new
            self.reason, self.source = reason, source
            self._sink.state = new.value
            events.append({"v": 1, "type": "emergency_state_changed", "state": new.value,
                           "previous_state": previous.value, "reason": reason,
                           "source": source})
        if events:
            self._sink.emit_locked(events)
            if new is not previous:
                self.changed_at = events[-1]["timestamp"]
        return previous, new is not previous

    def update_risk(self, update: RiskUpdate) -> tuple[Verdict, str | None]:
        """Apply a risk figure; returns its verdict and the halt reason if it halted."""
        with self.lock:
            verdict = self.book.update(update.limit, value=update.value, delta=update.delta,
                                       equity=update.equity)
            return verdict, self._apply_verdicts_locked([verdict])

    def _apply_verdicts_locked(self, verdicts: Sequence[Verdict]) -> str | None:
        events = [e for v in verdicts for e in v.events]
        breach = next((v for v in verdicts if v.breach), None)
        if breach is None or self.state is EmergencyState.HALT:
            if events:
                self._sink.emit_locked(events)
            return None
        lim = breach.limit
        reason = f"risk limit {lim.name} exceeded: {lim.value:g} >= {lim.threshold:g}"
        self._transition_locked(EmergencyState.HALT, reason, "risk_limit", events)
        return reason


class EmergencyActor(pykka.ThreadingActor):
    """The kill switch's mailbox. Replies to state messages with {state, previous_state}."""

    use_daemon_thread = True

    def __init__(self, *, gate: EmergencyGate, supervisors: Sequence[pykka.ActorRef[Any]],
                 admission: Admission, ack_timeout_s: float = 5.0) -> None:
        super().__init__()
        self._gate = gate
        self._supervisors = tuple(supervisors)
        self._admission = admission
        self._ack_timeout_s = ack_timeout_s
        self.last_halt_ack_s: float | None = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Halt):
            return self._change(EmergencyState.HALT, message.reason, message.source)
        if isinstance(message, Resume):
            self._check_relax(message.force, "resume")
            return self._change(EmergencyState.NORMAL, message.reason, "manual")
        if isinstance(message, Alert):
            if self._gate.state is EmergencyState.HALT:
                self._check_relax(message.force, "alert")
            return self._change(EmergencyState.ALERT, message.reason, "manual")
        if isinstance(message, ReduceOnly):
            # Allowed from HALT too: it is how an operator closes positions after a halt.
            return self._change(EmergencyState.REDUCE_ONLY, message.reason, "manual")
        if isinstance(message, RiskUpdate):
            return self._risk_update(message)
        if isinstance(message, BroadcastHalt):
            self._broadcast_halt(message.reason)
            return None
        return super().on_receive(message)

    def _check_relax(self, force: bool, what: str) -> None:
        with self._gate.lock:
            exceeded = self._gate.book.exceeded()
        if exceeded and not force:
            raise ResumeRefused(
                f"{what} refused: risk limit {', '.join(exceeded)} still exceeded "
                "(lower it, or force)")

    def _change(self, new: EmergencyState, reason: str | None, source: str) -> dict[str, str]:
        previous, changed = self._gate.transition(new, reason, source)
        if changed:
            level = log.warning if new is EmergencyState.HALT else log.info
            level("emergency_state_changed", state=new.value, previous_state=previous.value,
                  reason=reason, source=source)
        if new is EmergencyState.HALT:
            self._broadcast_halt(reason or "halted")
        return {"state": new.value, "previous_state": previous.value}

    def _risk_update(self, message: RiskUpdate) -> dict[str, Any]:
        verdict, halt_reason = self._gate.update_risk(message)
        if halt_reason is not None:
            log.warning("emergency_state_changed", state="HALT", reason=halt_reason,
                        source="risk_limit")
            self._broadcast_halt(halt_reason)
        limit = verdict.limit
        return {"limit": limit.name, "value": limit.value, "utilization": limit.utilization}

    def _broadcast_halt(self, reason: str) -> None:
        """Every supervisor ends its executions; queued ones end halted too. Waits for acks."""
        started = time.perf_counter()
        self._gate.wait_actions_begun(self._ack_timeout_s)
        end = EndExecutions(Ending.halted(reason))
        futures = [sup.ask(end, block=False) for sup in self._supervisors]
        for i, execution in enumerate(self._admission.drain_queued()):
            # A supervisor that starts an execution while halted ends it halted at once.
            self._supervisors[i % len(self._supervisors)].tell(StartExecution(execution))
        for future in futures:
            try:
                future.get(timeout=self._ack_timeout_s)
            except pykka.Timeout:
                log.error("halt_not_acknowledged", timeout_s=self._ack_timeout_s)
        self.last_halt_ack_s = time.perf_counter() - started
