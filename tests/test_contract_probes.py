"""CONTRACT.md sections 5 and 6 read as an outside test would: each terminal event
(`execution_completed` / `_failed` / `_halted` / `_cancelled`) carries `duration_ms`,
`status`, `results` or `error`, and `error_type` (None when the execution completed); an
execution's `nodes` count only attempts that started and list nodes not started yet as
`pending`."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from actors import Engine, Node, NodeContext, Workflow
from actors.messages import Halt
from tests.conftest import EngineFactory, Recorder


def _echo(ctx: NodeContext) -> dict[str, Any]:
    return {"ok": True}


def _boom(ctx: NodeContext) -> dict[str, Any]:
    raise ValueError("boom")


def _wait(ctx: NodeContext) -> dict[str, Any]:
    ctx.cancelled.wait(10.0)  # cooperative: cancel and halt set it
    return {}


_TERMINAL = {"execution_completed", "execution_failed", "execution_halted",
             "execution_cancelled"}


def _of(events: list[dict[str, Any]], execution_id: str, kinds: set[str]) -> list[Any]:
    return [e for e in events if e.get("execution_id") == execution_id and e["type"] in kinds]


def _terminal(recorder: Recorder, execution_id: str) -> dict[str, Any]:
    # The predicate reads the list it is given: the recorder's own readers would wait on
    # the subscription that needs the recorder's lock to deliver.
    events = recorder.wait_for(lambda evs: bool(_of(evs, execution_id, _TERMINAL)))
    (terminal,) = _of(events, execution_id, _TERMINAL)
    return dict(terminal)


def _check_fields(event: dict[str, Any]) -> None:
    assert {"duration_ms", "status", "error_type"} <= set(event), event
    assert "results" in event or "error" in event, event


def test_a_completed_execution_s_terminal_event_lists_error_type_as_none(
        engine: Engine, recorder: Recorder) -> None:
    wf = Workflow("done", nodes=[Node("a", _echo)])
    result = engine.submit(wf).result(timeout=5)
    terminal = _terminal(recorder, result.execution_id)
    assert terminal["type"] == "execution_completed"
    _check_fields(terminal)
    assert terminal["error_type"] is None
    assert terminal["results"] == {"a": {"ok": True}}


def test_every_ending_s_terminal_event_lists_the_contract_s_fields(
        engine: Engine, recorder: Recorder) -> None:
    failed = engine.submit(Workflow("bad", nodes=[Node("a", _boom)])).result(timeout=5)
    assert _terminal(recorder, failed.execution_id)["error_type"] == "ValueError"

    waiting = Workflow("waits", nodes=[Node("w", _wait)])
    cancelled = engine.submit(waiting)
    recorder.wait_for(lambda evs: bool(_of(evs, cancelled.execution_id, {"node_started"})))
    engine.cancel(cancelled.execution_id)
    assert cancelled.result(timeout=5).status == "cancelled"

    halted = engine.submit(waiting)
    recorder.wait_for(lambda evs: bool(_of(evs, halted.execution_id, {"node_started"})))
    engine.ref.ask(Halt(reason="test"))
    assert halted.result(timeout=5).status == "halted"

    kinds: dict[str, str] = {}
    for handle_id in (failed.execution_id, cancelled.execution_id, halted.execution_id):
        terminal = _terminal(recorder, handle_id)
        _check_fields(terminal)
        assert isinstance(terminal["error_type"], str), terminal
        kinds[terminal["type"]] = terminal["status"]
    assert kinds == {"execution_failed": "failed", "execution_cancelled": "cancelled",
                     "execution_halted": "halted"}


def _stuck(ctx: NodeContext) -> dict[str, Any]:
    _release.wait(10.0)  # ignores cancel: the only node actor stays busy
    return {}


_release = threading.Event()


def test_a_node_that_never_started_counts_no_attempt(make_engine: EngineFactory) -> None:
    """One node actor: `stuck` holds it, so `queued` is handed out but never starts; HALT
    ends the execution and `queued` is skipped. Its `attempts` in the terminal event's
    `nodes` (what `execution` shows) is 0, as for a node never handed out: no
    `node_started` was published for it."""
    engine = make_engine({"daemon": {"node_actors": 1, "supervisors": 1}})
    recorder = Recorder().follow(engine)
    wf = Workflow("one_actor", nodes=[
        Node("stuck", _stuck, timeout_s=30.0),
        Node("queued", _echo),
        Node("after", _echo, depends_on=["queued"]),
    ])
    try:
        handle = engine.submit(wf)
        recorder.wait_for(lambda evs: bool(_of(evs, handle.execution_id, {"node_started"})))
        engine.ref.ask(Halt(reason="test"))
        result = handle.result(timeout=5)
        terminal = _terminal(recorder, handle.execution_id)
        events = recorder.for_execution(handle.execution_id)
    finally:
        _release.set()
    assert result.status == "halted"
    assert {e["node_id"] for e in events if e["type"] == "node_started"} == {"stuck"}
    nodes = terminal["nodes"]
    assert nodes["queued"] == {"status": "skipped", "attempts": 0}, nodes
    assert nodes["after"] == {"status": "skipped", "attempts": 0}, nodes
    assert nodes["stuck"] == {"status": "cancelled", "attempts": 1}, nodes


def test_the_execution_view_lists_nodes_not_started_yet_as_pending(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """CONTRACT 6's `execution` shows every node; `pending` (CONTRACT 5's node statuses)
    for one not started yet: of a running execution and of a queued one."""
    engine = make_engine({"daemon": {"data_dir": str(tmp_path),
                                     "max_concurrent_executions": 1}})
    recorder = Recorder().follow(engine)
    gate = threading.Event()

    def held(ctx: NodeContext) -> dict[str, Any]:
        gate.wait(10.0)
        return {}

    wf = Workflow("two_steps", nodes=[Node("first", held), Node("second", _echo,
                                                                depends_on=["first"])])
    try:
        running = engine.submit(wf)
        queued = engine.submit(wf)
        recorder.wait_for(lambda evs: bool(_of(evs, running.execution_id, {"node_started"})))
        view = engine.execution(running.execution_id)
        queued_view = engine.execution(queued.execution_id)
    finally:
        gate.set()
    assert view is not None and queued_view is not None
    assert view["status"] == "running"
    assert view["nodes"] == {"first": {"status": "running", "attempts": 1},
                             "second": {"status": "pending", "attempts": 0}}
    assert queued_view["status"] == "queued"
    assert queued_view["nodes"] == {"first": {"status": "pending", "attempts": 0},
                                    "second": {"status": "pending", "attempts": 0}}
    assert queued.result(timeout=5).status == "completed"
    done = engine.execution(queued.execution_id)
    assert done is not None
    assert [n["status"] for n in done["nodes"].values()] == ["completed", "completed"]


def test_an_action_refused_in_reduce_only_counts_no_attempt(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """In REDUCE_ONLY the gate refuses an action not marked `reduces_risk` as it is about
    to start: it is `node_skipped` (`reduce_only`) without a `node_started`, so its
    `attempts` is 0 in the result, the terminal event and the journal's `execution`, as
    for any node that never started."""
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    recorder = Recorder().follow(engine)
    wf = Workflow("reducing", nodes=[
        Node("open", _echo, category="action"),
        Node("close", _echo, category="action", reduces_risk=True),
    ])
    engine.reduce_only("closing positions")
    handle = engine.submit(wf)
    result = handle.result(timeout=5)
    terminal = _terminal(recorder, handle.execution_id)
    events = recorder.for_execution(handle.execution_id)
    assert result.status == "completed"
    assert [e["node_id"] for e in events if e["type"] == "node_started"] == ["close"]
    assert [(e["node_id"], e["reason"]) for e in events
            if e["type"] == "node_skipped"] == [("open", "reduce_only")]
    assert result.nodes["open"] == {"status": "skipped", "attempts": 0}, result.nodes
    assert terminal["nodes"]["open"] == {"status": "skipped", "attempts": 0}, terminal
    view = engine.execution(handle.execution_id)
    assert view is not None
    assert view["nodes"]["open"] == {"status": "skipped", "attempts": 0}, view["nodes"]
    assert view["nodes"]["close"]["attempts"] == 1, view["nodes"]
