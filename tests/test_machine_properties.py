"""Property test of the execution state machine: random DAGs, random outcomes, random
endings from outside. Whatever happens, the machine keeps the DAG's promises."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.ending import Ending, NodeStatus
from actors.machine import Execution, NodeRun, Step
from actors.workflow import Node, Workflow

CATEGORIES = ("provider", "condition", "transform", "action")


def _noop(ctx: Any) -> None:
    return None


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    n = draw(st.integers(1, 7))
    nodes = []
    for i in range(n):
        deps = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        nodes.append(Node(f"n{i}", _noop, category=draw(st.sampled_from(CATEGORIES)),
                          depends_on=[f"n{d}" for d in sorted(deps)]))
    return Workflow("prop", nodes=nodes)


OUTCOMES = st.sampled_from(["ok", "ok", "ok", "false", "retry", "fail", "deny", "halt"])


@settings(max_examples=300, deadline=None)
@given(workflows(), st.lists(st.tuples(st.integers(0, 50), OUTCOMES), max_size=40))
def test_every_execution_ends_once_with_every_node_accounted_for(
        wf: Workflow, script: list[tuple[int, str]]) -> None:
    exe = Execution(execution_id="exec_prop_00000001", workflow=wf, inputs={}, bot_id=None,
                    strategy_id=None, priority=0, handle=None)
    published: list[dict[str, Any]] = [exe.start(0.0)]
    completed: set[int] = set()
    ready = list(wf.roots)
    running: dict[int, NodeRun] = {}

    def dispatch(indices: list[int]) -> None:
        for i in indices:
            assert all(d in completed for d in wf.deps[i]), "dispatched before its deps"
            run = NodeRun(exe, i, exe.attempts[i] + 1, {}, lambda *a, **k: {})
            run.started = True
            exe.dispatched(run)
            running[i] = run

    def close(ending: Ending, failed: int | None = None, events: Any = ()) -> None:
        batch = list(events)
        exe.close(ending, failed, 1.0, batch)
        published.extend(batch)

    def apply(step: Step) -> None:
        if step.ending is not None:
            close(step.ending, step.failed_node, step.events)
            return
        published.extend(step.events)
        dispatch(step.ready)

    dispatch(ready)
    for pick, outcome in script:
        if exe.closed or not running:
            break
        i = sorted(running)[pick % len(running)]
        run = running.pop(i)
        assert exe.answered(run)
        if outcome == "halt":
            running[i] = run
            exe.runs[i] = run
            close(Ending.halted("test"))
            break
        if outcome == "deny":
            apply(exe.denied(i, "reduce_only", 0.5))
        elif outcome == "retry":
            apply(exe.failed(i, "flaky", "ConnectionError", 0.0, run.attempt, 0.1))
            dispatch([i])  # the retry timer fires
        elif outcome == "fail":
            apply(exe.failed(i, "boom", "ValueError", 0.0, run.attempt, None))
        else:
            completed.add(i)
            apply(exe.succeeded(i, outcome, 0.0, run.attempt, 0.5, truth=outcome != "false"))
    if not exe.closed:
        close(Ending.cancelled("test over"))

    terminals = [e for e in published if e["type"].startswith("execution_")
                 and e["type"] != "execution_started"]
    assert len(terminals) == 1 and published[-1] is terminals[0]
    assert published[0]["type"] == "execution_started"
    ended = {NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.CANCELLED}
    assert all(status in ended for status in exe.node_status)
    skipped = [e["node_id"] for e in published if e["type"] == "node_skipped"]
    assert len(skipped) == len(set(skipped)), "a node skipped twice"
    completed_ids = [e["node_id"] for e in published if e["type"] == "node_completed"]
    assert not set(skipped) & set(completed_ids)
    assert exe.finished == sum(s in (NodeStatus.COMPLETED, NodeStatus.FAILED, NodeStatus.SKIPPED)
                               for s in exe.node_status)
    if terminals[0]["type"] == "execution_completed":
        assert all(s in (NodeStatus.COMPLETED, NodeStatus.SKIPPED) for s in exe.node_status)
