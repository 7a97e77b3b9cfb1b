"""A base for the engine's actors that no single message may stop.

pykka stops an actor whose *told* message raised (an asked one hands the error to the
asker), and on a BaseException (SystemExit, KeyboardInterrupt, ...) from any message it
stops every actor in the process, other engines' included. The root actor and the kill
switch run code they do not control on their threads (subscriber callbacks while an event
is sequenced, `__float__` of a figure a node passed to `ctx.risk`), so they derive from
`ContainedActor`: a BaseException leaves `handle` as an `InternalError`, which the asker
gets like any error, and a failed told message is logged, not fatal. The actor carries on.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import pykka
import structlog

from actors.errors import InternalError

log = structlog.get_logger("tradeloom.actors")


class ContainedActor(pykka.ThreadingActor):
    """Subclasses implement `handle(message)` instead of `on_receive`."""

    use_daemon_thread = True

    def handle(self, message: Any) -> Any:
        return super().on_receive(message)

    def on_receive(self, message: Any) -> Any:
        try:
            return self.handle(message)
        except Exception:
            raise  # the asker gets it; a told one goes to _handle_failure below
        except BaseException as exc:
            log.error("base_exception_contained", actor=type(self).__name__,
                      message=type(message).__name__, error=repr(exc))
            raise InternalError(
                f"{type(message).__name__} failed: {type(exc).__name__} raised while "
                f"handling it (contained: the engine keeps running): {exc!r}") from exc

    def _handle_failure(self, exception_type: type[BaseException] | None,
                        exception_value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        # pykka's version unregisters and stops the actor. A told message that failed is
        # a lost reply at worst, never a reason to lose the engine's root or kill switch.
        log.error("actor_message_failed", actor=type(self).__name__,
                  error=repr(exception_value))
