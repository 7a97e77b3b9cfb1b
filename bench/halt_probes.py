"""What `bench/halt.py` puts in flight and watches: providers that block until the halt
reaches them, an on-halt hook that cancels resting orders, and a bare pykka actor for the
ask round-trip baseline."""

from __future__ import annotations

import threading
from typing import Any

import pykka

from actors import Node, NodeContext, Workflow

#: How long a blocked provider waits at most (a round that never halts ends anyway).
BLOCK_S = 30.0
#: How long the bench waits for any count to be reached.
WAIT_S = 60.0


class InFlight:
    """Providers that block until the halt reaches them, counted in and out.

    mode "cancel": a provider waits on its own ctx.cancelled (a cooperative node: the halt
    wakes all of them at once). mode "gate": it waits on an outside gate the halt does not
    touch (a node stuck in I/O); the bench opens the gate after each round.
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.gate = threading.Event()
        self.cond = threading.Condition()
        self.entered = 0
        self.left = 0
        self.not_cancelled = 0
        self.actions = 0

    def provider(self, ctx: NodeContext) -> dict[str, float]:
        with self.cond:
            self.entered += 1
            self.cond.notify_all()
        if self.mode == "cancel":
            cancelled = ctx.cancelled.wait(BLOCK_S)
        else:
            self.gate.wait(BLOCK_S)
            cancelled = ctx.cancelled.is_set()
        with self.cond:
            self.left += 1
            self.not_cancelled += not cancelled
            self.cond.notify_all()
        return {"price": 50_000.0}

    def action(self, ctx: NodeContext) -> dict[str, str]:
        with self.cond:
            self.actions += 1
        return {"order": ctx.idempotency_key}

    def wait(self, what: str, target: int, timeout: float = WAIT_S) -> bool:
        with self.cond:
            return bool(self.cond.wait_for(lambda: getattr(self, what) >= target,
                                           timeout))


class CancelAllHook:
    """An on-halt hook: list resting orders, cancel them (an action, run in HALT)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.cancels = 0
        self.workflow = Workflow("cancel_all_orders", nodes=[
            Node("resting", lambda ctx: ["o1", "o2", "o3"], category="provider"),
            Node("cancel", self.cancel, category="action", depends_on=["resting"]),
        ])

    def cancel(self, ctx: NodeContext) -> int:
        with self.cond:
            self.cancels += 1
            self.cond.notify_all()
        return len(ctx.upstream["resting"])

    def wait(self, target: int, timeout: float = WAIT_S) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.cancels >= target, timeout)


class Echo(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message
