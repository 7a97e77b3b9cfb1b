"""Workflows the chaos probe's daemon runs (bench/chaos.py; `ref = "bench.chaos_workflows:..."`).

- `chaos_trade`: a flaky provider (raises `ConnectionError` about one time in four, so
  retries and its breaker move), a condition, and an action;
- `chaos_slow`: a provider that naps for `inputs["nap_s"]` (default 1 s) unless cancelled,
  then an action: it is running when a kill, a halt or a cancel comes;
- `chaos_stuck`: an action that outlives its timeout (a late result, an intent left
  unresolved);
- `chaos_on_halt`: the on-halt hook, one action (as examples/hooks.py cancels orders).

Every action run appends its idempotency key to the file named by `$TRADELOOM_CHAOS_ACTIONS`
(one `write` of one line with O_APPEND: whole lines survive a SIGKILL of the daemon), so the
probe can tell whether an action ever ran twice. No side effects at import.
"""

from __future__ import annotations

import os
import random
from typing import Any

from actors import Node, NodeContext, Workflow

ACTIONS_ENV = "TRADELOOM_CHAOS_ACTIONS"
FLAKY_FAILURE_RATE = 0.25

_random = random.Random(os.environ.get("TRADELOOM_CHAOS_SEED"))


def record_action(ctx: NodeContext) -> dict[str, Any]:
    path = os.environ.get(ACTIONS_ENV)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{ctx.idempotency_key}\n".encode())
        finally:
            os.close(fd)
    return {"order": ctx.idempotency_key}


def flaky_quote(ctx: NodeContext) -> dict[str, float]:
    if _random.random() < FLAKY_FAILURE_RATE:
        raise ConnectionError("chaos venue reset the connection")
    return {"price": 100.0 + _random.random()}


def worth_it(ctx: NodeContext) -> bool:
    return bool(ctx.upstream["quote"]["price"] > 0.0)


def nap(ctx: NodeContext) -> dict[str, bool]:
    seconds = float(ctx.inputs.get("nap_s", 1.0))
    return {"cancelled": ctx.cancelled.wait(seconds)}


trade = Workflow("chaos_trade", nodes=[
    Node("quote", flaky_quote, category="provider", breaker="chaos_venue", timeout_s=2.0),
    Node("worth_it", worth_it, category="condition", depends_on=["quote"]),
    Node("order", record_action, category="action", depends_on=["worth_it"]),
])

slow = Workflow("chaos_slow", nodes=[
    Node("nap", nap, category="provider", timeout_s=10.0),
    Node("settle", record_action, category="action", depends_on=["nap"]),
])

def stuck_action(ctx: NodeContext) -> dict[str, Any]:
    result = record_action(ctx)
    ctx.cancelled.wait(float(ctx.inputs.get("nap_s", 1.0)))
    return result


stuck = Workflow("chaos_stuck", nodes=[
    Node("order", stuck_action, category="action", timeout_s=0.3),
])

on_halt = Workflow("chaos_on_halt", nodes=[
    Node("flatten", record_action, category="action", timeout_s=5.0),
])
