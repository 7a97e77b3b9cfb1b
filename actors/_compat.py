"""The one place that touches pykka's and structlog's internals.

The engine needs four things the libraries do not offer publicly:

- pykka's `Envelope` (what an inbox holds) and `_ActorStop` (the stop message), to put runs
  and stops straight into a shared node-actor mailbox, and what its actor loop reads of an
  envelope (`ReleasingEnvelope`);
- the `_create_actor_inbox` hook, for inboxes on `queue.SimpleQueue` (fewer wake-up costs);
- the `_handle_receive` hook, to skip pykka's isinstance chain for hot messages and to turn
  a `BaseException` from a handler into an ordinary error: pykka answers those by stopping
  *every* actor in the process, other engines included;
- the `_handle_failure` hook, which stops an actor whose *told* message raised: an engine
  actor logs it and carries on;
- the `_actor_loop_setup` hook, to mark an engine actor's thread (`on_engine_actor_thread`);
- structlog's per-key ContextVars, set directly once per node run.

tests/test_compat.py fails loudly if an upgrade changes any of them, and pyproject.toml
bounds pykka below its next major version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar

import pykka
import structlog
from pykka._envelope import Envelope
from pykka.messages import _ActorStop

from actors.errors import InternalError, failure_fields, type_name
from actors.logs import get_logger

__all__ = ["EngineActorBase", "Envelope", "ReleasingEnvelope", "context_setters",
           "on_engine_actor_thread", "stop_envelope"]

_log = get_logger("tradeloom.actors")
_actor_thread = threading.local()


def on_engine_actor_thread() -> bool:
    """True in an engine actor's own thread (user code can run there: a done callback on
    a supervisor's, a node function on a node actor's)."""
    return getattr(_actor_thread, "engine_actor", False)


class ReleasingEnvelope:
    """An inbox entry that lets go of its message once it is read.

    pykka's actor loop keeps the envelope it handled last in a local until the next one
    arrives: an idle node actor would keep its last run alive, and through it the run's
    execution with every output (one 50 MB output held until that actor's next run). The
    loop reads `message` once and `reply_to` (None: nobody waits for a reply)."""

    __slots__ = ("_message",)
    reply_to = None

    def __init__(self, message: Any) -> None:
        self._message = message

    @property
    def message(self) -> Any:
        message, self._message = self._message, None
        return message


def stop_envelope() -> Envelope[Any]:
    """A stop message as an inbox holds it."""
    return Envelope(_ActorStop())


class EngineActorBase(pykka.ThreadingActor):
    """Base of every engine actor.

    `inbox_factory`, when set, makes the actor's inbox. Message types in `direct` go to
    `on_receive` without pykka's stop/proxy checks. A `BaseException` that is not an
    `Exception` (SystemExit, KeyboardInterrupt from user code reached through a handler)
    becomes an `InternalError` for the asker instead of stopping every actor.
    """

    use_daemon_thread = True
    inbox_factory: ClassVar[Callable[[], Any] | None] = None
    direct: ClassVar[frozenset[type]] = frozenset()

    @classmethod
    def _create_actor_inbox(cls) -> Any:
        factory = cls.inbox_factory
        return factory() if factory is not None else pykka.ThreadingActor._create_actor_inbox()

    def _actor_loop_setup(self) -> None:
        _actor_thread.engine_actor = True
        super()._actor_loop_setup()

    def _handle_receive(self, message: Any) -> Any:
        try:
            if type(message) in self.direct:
                return self.on_receive(message)
            return super()._handle_receive(message)
        except Exception:
            raise
        except BaseException as exc:
            raise InternalError(f"{type_name(exc)} raised while handling "
                                f"{type_name(message)}") from exc

    def _handle_failure(self, exception_type: type[BaseException] | None,
                        exception_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        # pykka's version unregisters and stops the actor when a *told* message raised. A
        # lost reply at worst is never a reason to lose a supervisor, the kill switch or
        # the root actor.
        _log.error("actor_message_failed", actor=type(self).__name__,
                   **failure_fields(exception_value))

    def _start_actor_loop(self) -> None:
        # `start()` registers the actor before it starts its thread: an actor whose thread
        # the OS refused would stay in pykka's registry for good, never to answer.
        try:
            super()._start_actor_loop()
        except BaseException:
            pykka.ActorRegistry.unregister(self.actor_ref)
            raise

    def stop_now(self) -> None:
        """Stop without processing the rest of the inbox (a retiring node actor)."""
        self._stop()


def context_setters() -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Setters for the structlog contextvars `execution_id` and `node_id`.

    `bind_contextvars` builds token dicts on every call; a node actor sets the same two
    keys once per run, so it holds their ContextVars (structlog's own) and sets them.
    """
    structlog.contextvars.bind_contextvars(execution_id=None, node_id=None)
    registry = getattr(structlog.contextvars, "_CONTEXT_VARS", {})
    prefix = getattr(structlog.contextvars, "STRUCTLOG_KEY_PREFIX", "structlog_")
    execution_var = registry.get(f"{prefix}execution_id")
    node_var = registry.get(f"{prefix}node_id")
    if execution_var is None or node_var is None:  # a structlog that stores them otherwise
        return (lambda v: structlog.contextvars.bind_contextvars(execution_id=v),
                lambda v: structlog.contextvars.bind_contextvars(node_id=v))
    return execution_var.set, node_var.set
