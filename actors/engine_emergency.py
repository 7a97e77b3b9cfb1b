"""The engine's kill-switch calls: the emergency state, its changes and the risk figures.

A part of `Engine` (a mixin it inherits), kept apart so each file reads as one concern.
Every change goes to the EmergencyActor as a message and, with a journal, the reply comes
after the change's own event is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pykka

from actors.emergency import EmergencyGate, EmergencyState
from actors.errors import EngineStopped, InternalError, WaitInCallback, type_name, valid_text
from actors.eventlog import current_subscription
from actors.interpreter import HaltPriority, quick_handoffs
from actors.messages import Alert, Halt, ReduceOnly, Resume, RiskUpdate
from actors.risk import finite_figure

if TYPE_CHECKING:
    from actors.durable import Durable
    from actors.events import EventSink

__all__ = ["EmergencyControls"]


class EmergencyControls:
    """halt / resume / alert / reduce_only / risk_update and the state, for `Engine`."""

    gate: EmergencyGate
    sink: EventSink
    _durable: Durable | None
    _emergency: pykka.ActorRef[Any]
    _stopped: bool

    @property
    def state(self) -> EmergencyState:
        return self.gate.state

    def halt(self, reason: str, *, origin: str = "api") -> dict[str, Any]:
        """Enter HALT; returns after every supervisor has acknowledged (on-halt hooks are
        submitted right after, without being waited for)."""
        with quick_handoffs():  # from the call to the commit (actors/interpreter.py)
            return self._ask_emergency(Halt(reason=_reason(reason), origin=origin))

    def resume(self, reason: str | None = None, *, force: bool = False,
               origin: str = "api") -> dict[str, Any]:
        """Back to NORMAL; `LimitExceeded` while an auto_halt limit is exceeded, unless
        `force`."""
        return self._ask_emergency(Resume(reason=_reason(reason), force=force,
                                          origin=origin))

    def alert(self, reason: str, *, force: bool = False, origin: str = "api") -> dict[str, Any]:
        """Enter ALERT; `LimitExceeded` while an auto_halt limit is exceeded, unless
        `force`."""
        return self._ask_emergency(Alert(reason=_reason(reason), force=force, origin=origin))

    def reduce_only(self, reason: str, *, origin: str = "api") -> dict[str, Any]:
        return self._ask_emergency(ReduceOnly(reason=_reason(reason), origin=origin))

    def emergency_history(self) -> list[dict[str, Any]]:
        """The last 1,000 state changes, oldest first: {state, previous_state, reason,
        source, origin, timestamp, seq}."""
        with self.sink.lock:
            return [dict(entry) for entry in self.gate.history]

    def risk_update(self, limit: str, value: float | None = None, delta: float | None = None,
                    *, equity: float | None = None) -> dict[str, Any]:
        """Set or move a limit's figure. Not a finite real number: TypeError/ValueError
        naming the argument, and the limit keeps its figure."""
        return self._ask_emergency(RiskUpdate(limit=limit, value=value, delta=delta,
                                              equity=equity))

    def _risk(self, limit: str, *, value: float | None = None, delta: float | None = None,
              equity: float | None = None) -> dict[str, Any]:
        return self.risk_update(limit, value, delta, equity=equity)

    def _ask_emergency(self, message: Any) -> dict[str, Any]:
        if self._stopped:
            raise EngineStopped("the engine is stopped")
        self._refuse_wait_in_callback(type(message).__name__)
        if type(message) is RiskUpdate:
            message = _plain_update(message)
        if type(message) is not Halt:
            return self._ask_and_commit(message, None)
        priority = self.gate.priority
        with priority.hold():  # the journal writer gives way until the reply is out
            return self._ask_and_commit(message, priority)

    def _ask_and_commit(self, message: Any, priority: HaltPriority | None) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = self._emergency.ask(message, block=True, timeout=30.0)
        except pykka.ActorDeadError:
            raise EngineStopped("the engine is stopped") from None
        if self._durable is not None:
            # The reply comes after the change is committed: a halt's, or a change's made
            # by this call, up to the newest change (its own event or a later one; not the
            # halted executions' events queued behind it); else everything queued so far.
            # A risk update cannot tell a change of its own from another caller's halt
            # sequenced before its figure was saved, so it always waits for everything.
            history = self.gate.history
            changed = reply.get("state") != reply.get("previous_state")
            if history and (type(message) is Halt
                            or (changed and type(message) is not RiskUpdate)):
                newest = history[-1]["seq"]
                if priority is not None:
                    priority.first(newest)  # what the reply waits for is never held back
                self._durable.wait_commit(upto_seq=newest)
            else:
                self._durable.wait_commit()
        return reply

    def _refuse_wait_in_callback(self, what: str) -> None:
        # events: a callback runs on its subscription's thread, which the engine's results
        # wait for: waiting there for the engine could wait for itself.
        if current_subscription() is not None:
            raise WaitInCallback(
                f"{what} waits for the engine and cannot wait from a subscriber callback; "
                f"send it without waiting: engine.ref.tell({what}(...))")


def _reason(reason: Any) -> Any:
    # A lone surrogate (JSON's "\ud800" from the web page) fails a log line and a journal
    # row: replaced with "?" as on the wire. Not a string: the actor refuses it.
    return valid_text(reason) if isinstance(reason, str) else reason


def _plain_update(update: RiskUpdate) -> RiskUpdate:
    """`update` with its figures as floats and its limit name as a plain str, made here,
    in the caller's thread (a node's, for `ctx.risk`): converting a figure may run user
    code (a float subclass's `__float__`, a str subclass's `__hash__`), and the kill switch
    applies figures under the sequencing lock, where a slow conversion would freeze every
    execution and every halt. A figure refused here is refused as the book refuses it
    (TypeError/ValueError naming the argument); anything else the conversion raises is an
    InternalError, as it was when the kill switch converted it."""
    figures: dict[str, float | None] = {}
    arg = "limit"
    try:
        limit = str.__str__(update.limit) if isinstance(update.limit, str) else update.limit
        for arg in ("value", "delta", "equity"):
            figure = getattr(update, arg)
            figures[arg] = None if figure is None else finite_figure(arg, figure)
    except (TypeError, ValueError):
        raise
    except BaseException as exc:  # user code converting a figure: contained
        raise InternalError(f"{type_name(exc)} raised converting the risk update's "
                            f"{arg}") from exc
    return RiskUpdate(limit=limit, **figures)
