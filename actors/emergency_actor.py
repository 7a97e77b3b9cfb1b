"""The kill switch's mailbox: the actor in front of `EmergencyGate` (`actors/emergency.py`).

State changes by message, risk updates, the stale-feed watchdog, the broadcast that tells
every supervisor to end its executions, and the on-halt hooks that follow it. The gate
holds the state and admits each node; this actor is where a change is asked for and where
HALT is enforced on the supervisors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pykka

from actors._compat import EngineActorBase
from actors.emergency import EmergencyGate, EmergencyState
from actors.ending import Ending
from actors.inbox import TimerInbox
from actors.interpreter import quick_handoffs
from actors.logs import get_logger
from actors.messages import (
    Alert,
    BroadcastHalt,
    EndExecutions,
    Halt,
    ReduceOnly,
    Resume,
    RiskUpdate,
    RunHaltHooks,
    StartExecution,
    Tick,
)

if TYPE_CHECKING:
    from actors.admission import Admission

__all__ = ["EmergencyActor", "HaltHook"]

log = get_logger("tradeloom.emergency")

#: Called after HALT is entered and acknowledged, with (reason, source, origin).
HaltHook = Callable[[str, str, str], None]
_T = TypeVar("_T")


class EmergencyActor(EngineActorBase):
    """The kill switch's mailbox. Replies to state messages with {state, previous_state}.

    Its inbox wait ends when the stale-feed watchdog is due (a Tick); a manual clock's
    advance sends the Tick instead. No thread of its own, no polling.
    """

    inbox_factory = TimerInbox

    def __init__(self, *, gate: EmergencyGate, supervisors: Sequence[pykka.ActorRef[Any]],
                 admission: Admission, on_halt: HaltHook | None = None,
                 ack_timeout_s: float = 5.0) -> None:
        super().__init__()
        self._gate = gate
        self._supervisors = tuple(supervisors)
        self._admission = admission
        self._on_halt = on_halt
        self._ack_timeout_s = ack_timeout_s
        cast(TimerInbox, self.actor_inbox).next_delay = gate.next_stale_delay

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Halt):
            return self._change(EmergencyState.HALT, message.reason, message.source,
                                message.origin)
        if isinstance(message, Resume):
            return self._change(EmergencyState.NORMAL, message.reason, "manual",
                                message.origin, force=message.force)
        if isinstance(message, Alert):
            return self._change(EmergencyState.ALERT, message.reason, "manual",
                                message.origin, force=message.force)
        if isinstance(message, ReduceOnly):
            # Allowed from HALT, and while a limit is exceeded: it is how positions close.
            return self._change(EmergencyState.REDUCE_ONLY, message.reason, "manual",
                                message.origin)
        if isinstance(message, RiskUpdate):
            return self._risk_update(message)
        if isinstance(message, Tick):
            self._check_stale()
            return None
        if isinstance(message, BroadcastHalt):
            self._halted(message.reason, message.source, message.origin)
            return None
        if isinstance(message, RunHaltHooks):
            self._run_hooks(message)
            return None
        return super().on_receive(message)

    def _change(self, new: EmergencyState, reason: str | None, source: str, origin: str,
                *, force: bool = False) -> dict[str, str]:
        previous, changed = self._enforcing(
            lambda: self._gate.transition(new, reason, source, origin, force=force),
            source, origin)
        if changed:
            level = log.warning if new is EmergencyState.HALT else log.info
            level("emergency_state_changed", state=new.value, previous_state=previous.value,
                  reason=reason, source=source, origin=origin, forced=force)
        if new is EmergencyState.HALT:
            # Broadcast again on a repeated Halt (cheap, and it mops up stragglers); the
            # hooks run only when HALT is entered.
            self._broadcast_halt(reason or "halted")
            if changed:
                self._hooks_after(reason or "halted", source, origin)
        return {"state": new.value, "previous_state": previous.value}

    def _risk_update(self, message: RiskUpdate) -> dict[str, Any]:
        verdict, halt_reason = self._enforcing(lambda: self._gate.update_risk(message),
                                               "risk_limit", "engine")
        if halt_reason is not None:
            log.warning("emergency_state_changed", state="HALT", reason=halt_reason,
                        source="risk_limit", origin="engine")
            self._halted(halt_reason, "risk_limit", "engine")
        limit = verdict.limit
        return {"limit": limit.name, "value": limit.value, "utilization": limit.utilization}

    def _check_stale(self) -> None:
        changed = self._enforcing(self._gate.check_stale, "stale_feed", "engine")
        if changed is None:
            return
        state, reason = changed
        log.warning("emergency_state_changed", state=state.value, reason=reason,
                    source="stale_feed", origin="engine")
        if state is EmergencyState.HALT:
            self._halted(reason, "stale_feed", "engine")

    def _enforcing(self, change: Callable[[], _T], source: str, origin: str) -> _T:
        """Run a gate call that may enter HALT. Should it raise once HALT is entered (a
        subscriber or output failed on the event), the halt is still enforced before the
        error goes back to the asker: a kill switch that half-worked is worse than none."""
        was_halted = self._gate.state is EmergencyState.HALT
        try:
            return change()
        except BaseException:
            if not was_halted and self._gate.state is EmergencyState.HALT:
                self._halted(self._gate.reason or "halted", source, origin)
            raise

    def _halted(self, reason: str, source: str, origin: str) -> None:
        """HALT was entered without a Halt message (a limit, the watchdog, the gate)."""
        self._broadcast_halt(reason)
        self._hooks_after(reason, source, origin)

    def _hooks_after(self, reason: str, source: str, origin: str) -> None:
        # Told to ourselves: they run right after this message, so the halt's reply (and
        # its acknowledgement) never waits for them.
        if self._on_halt is not None:
            self.actor_ref.tell(RunHaltHooks(reason=reason, source=source, origin=origin))

    def _run_hooks(self, message: RunHaltHooks) -> None:
        assert self._on_halt is not None
        try:
            self._on_halt(message.reason, message.source, message.origin)
        except BaseException as exc:  # noqa: BLE001 - a hook never takes the kill switch down
            log.error("on_halt_hook_failed", reason=message.reason, error=repr(exc))

    def _broadcast_halt(self, reason: str) -> None:
        """Every supervisor ends its executions; queued ones end halted too. Waits for acks."""
        history, priority = self._gate.history, self._gate.priority
        with quick_handoffs(), priority.hold():
            priority.first(history[-1]["seq"] if history else 0)
            self._gate.wait_actions_begun(self._ack_timeout_s)
            ending = Ending.halted(reason)
            end = EndExecutions(ending)
            futures = [sup.ask(end, block=False) for sup in self._supervisors]
            for i, execution in enumerate(self._admission.drain_queued(halt=True)):
                # Ended halted when its supervisor takes it, whatever the state is by then:
                # an operator's resume (or reduce-only) that lands before the supervisor
                # gets to it must not run work that was queued at the halt. (One admitted
                # to run but not started yet is ended so by its supervisor: `halts`.)
                execution.ending_on_start = ending  # (on-halt hooks are never queued)
                self._supervisors[i % len(self._supervisors)].tell(StartExecution(execution))
            _acknowledged(futures, self._ack_timeout_s)


def _acknowledged(futures: Iterable[pykka.Future[Any]], timeout_s: float) -> None:
    for future in futures:
        try:
            future.get(timeout=timeout_s)
        except pykka.Timeout:
            log.error("halt_not_acknowledged", timeout_s=timeout_s)
        except Exception as exc:  # noqa: BLE001 - a dead supervisor must not stop the rest
            log.error("halt_not_acknowledged", error=repr(exc))
