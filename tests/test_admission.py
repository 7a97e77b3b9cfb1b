"""Admission (README `[daemon] max_concurrent_executions` / `max_queued_executions`):
at most `max_running` executions run, the rest wait in a bounded priority queue, beyond it
`Overloaded`. A cancelled queued execution leaves the queue at once: it no longer counts
towards the bound, and it hands no running slot to the queue when it ends.

The unit tests drive `Admission` with stand-ins (it reads only `id` and `priority`); the
engine test uses real actors and waits on events and supervisor barriers.
"""

from __future__ import annotations

import threading
from typing import cast

from actors import Engine, Node, NodeContext, Workflow
from actors.admission import OVERLOADED, QUEUED, RUN, Admission
from actors.machine import Execution
from tests.conftest import EngineFactory, Recorder


class Queued:
    """What Admission reads of an execution."""

    def __init__(self, execution_id: str, priority: int = 0) -> None:
        self.id = execution_id
        self.priority = priority


def entry(execution_id: str, priority: int = 0) -> Execution:
    return cast(Execution, Queued(execution_id, priority))


def test_cancelled_entries_do_not_count_towards_the_queue_bound() -> None:
    admission = Admission(max_running=1, max_queued=2)
    assert admission.admit(entry("running")) == RUN
    first, second = entry("q1"), entry("q2")
    assert admission.admit(first) == QUEUED
    assert admission.admit(second) == QUEUED
    assert admission.admit(entry("over")) == OVERLOADED
    assert admission.queued == 2

    assert admission.remove_queued("q1") is first
    assert admission.queued == 1
    assert admission.remove_queued("q1") is None  # already out
    assert admission.admit(entry("q3")) == QUEUED  # the freed place is usable at once
    assert admission.queued == 2
    assert admission.admit(entry("over2")) == OVERLOADED
    assert admission.queued == 2
    assert admission.counts["refused"] == 2


def test_a_cancelled_entry_hands_no_running_slot_to_the_queue() -> None:
    """The cancelled entry holds a slot only to be ended; when it ends, the queue must not
    start in its place while `max_running` executions still run."""
    admission = Admission(max_running=1, max_queued=2)
    assert admission.admit(entry("running")) == RUN
    waiting = entry("q2")
    assert admission.admit(entry("q1")) == QUEUED
    assert admission.admit(waiting) == QUEUED
    assert admission.remove_queued("q1") is not None
    assert admission.finish("cancelled") is None  # q1 ended; "running" still runs
    assert (admission.running, admission.queued) == (1, 1)
    assert admission.finish("completed") is waiting  # "running" ended: q2 takes its slot
    assert (admission.running, admission.queued) == (1, 0)
    assert admission.finish("completed") is None
    assert (admission.running, admission.queued) == (0, 0)
    assert admission.counts == {"cancelled": 1, "completed": 2}


def test_a_cancelled_queued_execution_frees_its_place_and_no_running_slot(
        make_engine: EngineFactory) -> None:
    engine: Engine = make_engine({"daemon": {"max_concurrent_executions": 1,
                                             "max_queued_executions": 2}})
    rec = Recorder()
    rec.follow(engine)
    entered, release = threading.Event(), threading.Event()

    def hold(ctx: NodeContext) -> str:
        entered.set()
        release.wait(10)
        return "held"

    quick = Workflow("quick", nodes=[Node("n", lambda ctx: ctx.inputs["name"])])
    try:
        blocking = engine.submit(Workflow("blocking", nodes=[Node("hold", hold)]))
        assert entered.wait(5)
        cancelled = engine.submit(quick, inputs={"name": "cancelled"})
        waiting = engine.submit(quick, inputs={"name": "waiting"})
        assert (engine.status()["running"], engine.status()["queued"]) == (1, 2)

        assert engine.cancel(cancelled.execution_id) == "cancelled"
        assert cancelled.result(timeout=5).status == "cancelled"
        late = engine.submit(quick, inputs={"name": "late"})
        assert not late.done(), "refused although a queued place was free"
        engine.supervisor_stats()  # every start the cancel caused has been handled
        # Still one running (the blocking one) and both others waiting.
        started = {e["execution_id"] for e in rec.of_type("execution_started")}
        assert started == {blocking.execution_id, cancelled.execution_id}
        assert not waiting.done()
        assert (engine.status()["running"], engine.status()["queued"]) == (1, 2)
    finally:
        release.set()
    assert blocking.result(timeout=5).status == "completed"
    assert waiting.result(timeout=5).results == {"n": "waiting"}
    assert late.result(timeout=5).results == {"n": "late"}
    starts = [e["execution_id"] for e in rec.of_type("execution_started")]
    assert starts[2:] == [waiting.execution_id, late.execution_id]
    assert (engine.status()["running"], engine.status()["queued"]) == (0, 0)
