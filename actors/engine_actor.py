"""The engine's root actor: `engine.ref.ask(message)` for the public messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actors._compat import EngineActorBase
from actors.messages import Alert, Cancel, GetStatus, Halt, ReduceOnly, Resume, RiskUpdate, Submit

if TYPE_CHECKING:
    from actors.engine import Engine
    from actors.execution import ExecutionHandle

__all__ = ["EngineActor"]


class EngineActor(EngineActorBase):
    """The root actor: `engine.ref.ask(message)` for every public message. No message
    stops it: an error goes to the asker (a told one is logged)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self._engine = engine
        self._handlers: dict[type, Callable[[Any], Any]] = {
            Submit: self._submit,
            Halt: engine._ask_emergency,
            Resume: engine._ask_emergency,
            Alert: engine._ask_emergency,
            ReduceOnly: engine._ask_emergency,
            RiskUpdate: engine._ask_emergency,
            Cancel: lambda m: {"status": engine.cancel(m.execution_id)},
            GetStatus: lambda m: engine.status(),
        }

    def on_receive(self, message: Any) -> Any:
        handler = self._handlers.get(type(message))
        if handler is None:  # pykka's own would log it and answer None: a typo goes unseen
            names = ", ".join(sorted(t.__name__ for t in self._handlers))
            raise TypeError(f"engine.ref takes the messages of actors.messages ({names}), "
                            f"not {type(message).__name__}")
        return handler(message)

    def _submit(self, message: Submit) -> ExecutionHandle:
        return self._engine.submit(message.workflow, message.inputs, bot_id=message.bot_id,
                                   strategy_id=message.strategy_id, priority=message.priority)
