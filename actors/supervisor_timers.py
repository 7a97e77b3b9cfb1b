"""The supervisor's timer kinds, and which of its timers still matter.

A timer outlives what it guards until the heap's next sweep (`actors.timers`), so an entry
names what it is for without keeping it alive: a node timeout holds a weak reference to
its run. A run holds its `upstream` (in a long chain every output before it: 700 MB for an
8,000-node chain, measured, when timers kept runs) and its execution, which is then freed
as it ends, its memory still in cache, not thousands of executions later at the sweep.
A run still going (a stuck node, its execution ended or not) is held by its node actor:
its timer fires, and the node is abandoned. Retry and deadline timers hold a weak
reference to their execution, for the same reason (a workflow `timeout_s` sets one for
every execution).
"""

from __future__ import annotations

import weakref
from enum import IntEnum

from actors.machine import Execution, NodeRun
from actors.timers import Entry

#: A node still running this long after its execution ended (halt, cancel, fail-fast, the
#: workflow's deadline) is stuck: its actor is abandoned as at a timeout. A cooperative
#: node reads `ctx.cancelled` and is back well before.
ABANDON_AFTER_CANCEL_S = 0.5


class TimerKind(IntEnum):
    """What a supervisor timer is for, and what its entry's target and arg are."""

    NODE_TIMEOUT = 0  # target: weakref to the NodeRun
    RETRY = 1         # target: weakref to the Execution, arg: (node index, failed attempt)
    DEADLINE = 2      # target: weakref to the Execution (the workflow's timeout_s)
    POOL_CHECK = 3    # target: NodePool (grow while runs wait)
    WAKE = 4          # target: tuple of cancel Events to set, arg: set them by then
    CANCELLED_RUN = 5  # target: weakref to a NodeRun its execution's end cancelled


def timed_run(ref: weakref.ref[NodeRun]) -> NodeRun | None:
    """The run a node timeout was set for, while it is still its node's current run (not
    answered, not abandoned); else None."""
    run = ref()
    if run is None or run.abandoned or run.execution.runs.get(run.index) is not run:
        return None
    return run


def open_execution(ref: weakref.ref[Execution]) -> Execution | None:
    """The execution a retry or deadline timer was set for, while it has not ended."""
    exe = ref()
    return None if exe is None or exe.closed else exe


def timer_alive(timer: Entry) -> bool:
    """Whether a timer still matters (the heap's sweep drops the others)."""
    _, _, kind, target, _ = timer
    if kind is TimerKind.NODE_TIMEOUT or kind is TimerKind.CANCELLED_RUN:
        return timed_run(target) is not None
    if kind is TimerKind.POOL_CHECK or kind is TimerKind.WAKE:
        return True
    return open_execution(target) is not None
