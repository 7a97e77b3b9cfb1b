"""Tiny workflows the end-to-end tests register in a real daemon's config
(`ref = "tests.e2e_workflows:fast"`; the daemon runs with the repo root as its working
directory, so `tests` imports).

- `fast`: one transform node; four events per execution (started, node started/completed,
  completed: no progress event for a single node).
- `slow`: one transform node that waits `inputs["sleep_s"]` (default 30) or until cancelled,
  so shutdowns and crashes find executions in flight.
- `act`: one action node that waits the same way: a started action leaves an intent.
- `w`: the workflow the Node.js client submits (`inputs.threshold` echoed back).
"""

from __future__ import annotations

from typing import Any

from actors import Node, NodeContext, Workflow


def _echo(ctx: NodeContext) -> dict[str, Any]:
    return {"n": ctx.inputs.get("n", 0)}


def _wait(ctx: NodeContext) -> dict[str, Any]:
    # Cooperative: a cancel, halt or shutdown sets ctx.cancelled and ends the wait early.
    sleep_s = float(ctx.inputs.get("sleep_s", 30.0))
    cancelled = ctx.cancelled.wait(sleep_s)
    return {"slept": not cancelled}


fast = Workflow("fast", nodes=[Node("echo", _echo)])
slow = Workflow("slow", nodes=[Node("wait", _wait, timeout_s=120.0)])
act = Workflow("act", nodes=[Node("order", _wait, category="action", timeout_s=120.0)])
w = Workflow("w", nodes=[Node("echo", _echo)])
#: A chain whose second node waits: killed there, the first has completed, the last two
#: never started.
chain = Workflow("chain", nodes=[
    Node("first", _echo), Node("wait", _wait, depends_on=["first"], timeout_s=120.0),
    Node("third", _echo, depends_on=["wait"]), Node("last", _echo, depends_on=["third"])])

#: Many events per execution (1 + 2 x 50 node events + 49 progress + 1 = 151), cheaply:
#: how the tests and benches make a burst of events without thousands of submits.
WIDE_NODES = 50
wide = Workflow("wide", nodes=[Node(f"n{i}", _echo) for i in range(WIDE_NODES)])


def _small(ctx: NodeContext) -> str:
    return "v" * 200


#: Many small results, each smaller than a cut's note, together over a 64 KiB
#: `[journal] max_event_bytes`: the journal cuts `results` whole (a note, not a map). The
#: ids "by" and "o" occur inside that note's text.
many_results = Workflow("many_results", nodes=[
    Node(node_id, _small) for node_id in ("by", "o", *(f"m{i}" for i in range(400)))])
