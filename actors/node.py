"""Node actors and their pool.

A node actor runs one node function at a time in its own thread. Supervisors keep a pool of
warm ones: starting a thread per node per execution is what made earlier designs slow. A
node actor whose node overran or got stuck is never reused: the supervisor abandons it (a
Python thread cannot be killed) and it stops itself if the function ever returns.
"""

from __future__ import annotations

import time
from typing import Any

import pykka
import structlog

from actors.emergency import EmergencyGate
from actors.inbox import FastInbox
from actors.messages import NodeDone, RunNode

_perf = time.perf_counter
_bind = structlog.contextvars.bind_contextvars
_reset = structlog.contextvars.reset_contextvars


class NodeActor(pykka.ThreadingActor):
    # A stuck node must never keep the process alive.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        return FastInbox()

    def __init__(self, supervisor: pykka.ActorRef[Any], gate: EmergencyGate) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._gate = gate

    def on_receive(self, message: Any) -> None:
        run = message.run if type(message) is RunNode else None
        if run is None:
            return super().on_receive(message)  # type: ignore[no-any-return]
        node = run.node
        execution = run.execution
        started_event = {
            **execution.head, "type": "node_started", "node_id": node.id,
            "node_name": node.name, "node_category": node.category, "attempt": run.attempt,
        }
        refused = self._gate.admit(run, started_event)
        if refused is not None:
            self._supervisor.tell(NodeDone(run, refused=refused))
            return None
        tokens = _bind(execution_id=execution.id, node_id=node.id)
        t0 = _perf()
        try:
            if node.category == "action":
                self._gate.action_begun()
            value = node.fn(run.ctx)
            error = None
        except BaseException as exc:  # noqa: BLE001 - a node's failure is data, never fatal
            value, error = None, exc
        finally:
            _reset(**tokens)
        self._supervisor.tell(NodeDone(run, value, error, _perf() - t0))
        return None


class NodePool:
    """Warm node actors of one supervisor (used only from that supervisor's thread)."""

    def __init__(self, supervisor: pykka.ActorRef[Any], gate: EmergencyGate, *,
                 max_idle: int) -> None:
        self._supervisor = supervisor
        self._gate = gate
        self._max_idle = max_idle
        self._idle: list[pykka.ActorRef[Any]] = []
        self.started = 0
        self.abandoned = 0

    def acquire(self) -> pykka.ActorRef[Any]:
        if self._idle:
            return self._idle.pop()
        self.started += 1
        return NodeActor.start(self._supervisor, self._gate)

    def release(self, actor: pykka.ActorRef[Any]) -> None:
        if len(self._idle) < self._max_idle:
            self._idle.append(actor)
        else:
            actor.stop(block=False)

    def discard(self, actor: pykka.ActorRef[Any]) -> None:
        """An abandoned actor: stop it once its stuck function returns (if ever)."""
        self.abandoned += 1
        try:
            actor.stop(block=False)
        except pykka.ActorDeadError:
            pass

    @property
    def idle(self) -> int:
        return len(self._idle)

    def stop_all(self) -> None:
        idle, self._idle = self._idle, []
        for actor in idle:
            actor.stop(block=False)
