"""Workflows the daemon benchmarks register (`ref = "bench.workflows:chain"`) and, for the
in-process baselines, submit directly. No side effects at import: the daemon imports this.

- `chain`: provider -> condition -> action with trivial functions, the shape of
  bench/core.py's workflow (8 events per execution);
- `wide`: 50 independent nodes (151 events per execution): a cheap way to make a stream of
  events with few submits;
- `stamp`: 10 independent nodes, each returning `{"t": time.time()}` at its return (31
  events per execution): the marker the stream latency is measured from.
"""

from __future__ import annotations

import time
from typing import Any

from actors import Node, NodeContext, Workflow

WIDE_NODES = 50
STAMP_NODES = 10
#: Events per execution: started, 2 per node, a progress per node but the last, terminal.
WIDE_EVENTS = 1 + 2 * WIDE_NODES + (WIDE_NODES - 1) + 1
STAMP_EVENTS = 1 + 2 * STAMP_NODES + (STAMP_NODES - 1) + 1


def provider(ctx: NodeContext) -> dict[str, float]:
    return {"price": 50_000.0}


def condition(ctx: NodeContext) -> bool:
    return bool(ctx.upstream["provider"]["price"] > 10.0)


def action(ctx: NodeContext) -> dict[str, str]:
    return {"order": ctx.idempotency_key}


def small(ctx: NodeContext) -> dict[str, Any]:
    return {"ok": 1}


def stamp(ctx: NodeContext) -> dict[str, float]:
    return {"t": time.time()}


chain = Workflow("chain", nodes=[
    Node("provider", provider, category="provider"),
    Node("condition", condition, category="condition", depends_on=["provider"]),
    Node("action", action, category="action", depends_on=["condition"]),
])
wide = Workflow("wide", nodes=[Node(f"n{i}", small) for i in range(WIDE_NODES)])
stamped = Workflow("stamp", nodes=[Node(f"s{i}", stamp) for i in range(STAMP_NODES)])
