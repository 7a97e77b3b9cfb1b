"""A submit refused at the door (HALT, a full queue) is in the journal as `refused`
(CONTRACT 5 lists the status for `execution` and `executions`): found by id with its error,
listed by status, kept across a restart, and pruned with the events around it."""

from __future__ import annotations

import threading
from pathlib import Path

from actors import Node, Workflow
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import Action, eventually, journal_config, trade_workflow

WAIT_S = 10.0


def test_a_submit_refused_in_halt_is_journaled_and_survives_a_restart(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    config = journal_config(tmp_path)
    engine = make_engine(config)
    engine.halt("maintenance")
    action = Action()
    handle = engine.submit(trade_workflow("wf", action), {"size": 2}, bot_id="b1",
                           strategy_id="s1", priority=3)
    result = handle.result(WAIT_S)
    assert (result.status, result.error_type) == ("refused", "Halted")
    found = engine.execution(handle.execution_id)
    assert found is not None, "the refused submit is not in the journal"
    assert (found["status"], found["error_type"]) == ("refused", "Halted")
    assert found["error"] == "submit refused: the engine is in HALT"
    assert (found["workflow_id"], found["bot_id"], found["strategy_id"]) == ("wf", "b1", "s1")
    assert found["inputs"] == {"size": 2}
    assert [e["execution_id"] for e in engine.executions(status="refused")] == [
        handle.execution_id]
    engine.stop()

    again = make_engine(config)
    kept = again.execution(handle.execution_id)
    assert kept is not None and kept["status"] == "refused", kept  # not "interrupted"
    assert action.calls == []


def test_a_submit_refused_by_a_full_queue_is_journaled(make_engine: EngineFactory,
                                                       tmp_path: Path) -> None:
    engine = make_engine(journal_config(
        tmp_path, daemon={"max_concurrent_executions": 1, "max_queued_executions": 0}))
    gate = threading.Event()
    busy = Workflow("busy", nodes=[Node("hold", lambda ctx: gate.wait(WAIT_S))])
    try:
        first = engine.submit(busy)
        eventually(lambda: engine.status()["running"] == 1)
        refused = engine.submit(busy)
        assert refused.result(WAIT_S).error_type == "Overloaded"
        found = engine.execution(refused.execution_id)
        assert found is not None
        assert (found["status"], found["error_type"]) == ("refused", "Overloaded")
    finally:
        gate.set()
    assert first.result(WAIT_S).status == "completed"


def test_refused_submits_are_pruned_with_the_events_around_them(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path, journal={"keep_events": 20}))
    quick = Workflow("quick", nodes=[Node("n", lambda ctx: 1)])
    engine.halt("a moment")
    refused = engine.submit(quick)
    assert refused.result(WAIT_S).status == "refused"
    engine.resume("go on")
    for _ in range(30):  # ~4 events each: far past keep_events
        assert engine.submit(quick).result(WAIT_S).status == "completed"
    eventually(lambda: engine.execution(refused.execution_id) is None, timeout=WAIT_S)
