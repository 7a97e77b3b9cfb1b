"""A node that hangs on every run (`[daemon] max_stuck_runs_per_node`): its runs abandoned
past their timeout hold threads that cannot be killed, so once a node has that many still
stuck its next runs fail at once with `NodeStuck`, its function not called, until one of
the stuck ones returns. Before, each run leaked a thread (+150 a minute on a 0.2 s
interval) until the OS refused threads and healthy workflows waited for ever."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from actors import Node, NodeContext, Workflow
from tests.conftest import EngineFactory, Recorder
from tests.engine_journal_helpers import eventually, journal_config

WAIT_S = 10.0
LIMIT = 2


class Venue:
    """A call that hangs (ignoring ctx.cancelled) until released, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()

    def __call__(self, ctx: NodeContext) -> Any:
        self.calls += 1
        self.release.wait(WAIT_S)
        return {"ok": True}


def hanging_workflow(venue: Venue, category: str = "provider") -> Workflow:
    return Workflow("hangs", nodes=[
        Node("venue", venue, category=category, timeout_s=0.05,
             max_restarts=0)])


def test_a_node_with_its_limit_of_stuck_runs_is_not_called_until_one_returns(
        make_engine: EngineFactory) -> None:
    venue = Venue()
    engine = make_engine({"daemon": {"max_stuck_runs_per_node": LIMIT}})
    recorder = Recorder()
    recorder.follow(engine)
    flow = hanging_workflow(venue)
    try:
        for _ in range(LIMIT):  # each times out and leaves its thread stuck
            assert engine.submit(flow).result(timeout=WAIT_S).error_type == "NodeTimeout"
        refused = engine.submit(flow).result(timeout=WAIT_S)
        assert refused.status == "failed" and refused.error_type == "NodeStuck", refused
        assert f"{LIMIT} of its runs are still stuck" in (refused.error or "")
        assert venue.calls == LIMIT  # not called: no third thread
        events = recorder.for_execution(refused.execution_id)
        assert [e["type"] for e in events] == [
            "execution_started", "node_started", "node_failed", "execution_failed"], events
        assert events[2]["error_type"] == "NodeStuck" and events[2]["final"] is True
        assert engine.supervisor_stats()[0]["node_actors_abandoned"] == LIMIT
    finally:
        venue.release.set()  # the stuck calls return: their actors retire
    eventually(lambda: engine.submit(flow).result(timeout=WAIT_S).status == "completed",
               WAIT_S, "the node to run again once its stuck runs returned")
    assert venue.calls > LIMIT


def test_other_nodes_run_while_one_is_at_its_limit(make_engine: EngineFactory) -> None:
    venue = Venue()
    engine = make_engine({"daemon": {"max_stuck_runs_per_node": 1}})
    try:
        assert engine.submit(hanging_workflow(venue)).result(
            timeout=WAIT_S).error_type == "NodeTimeout"
        assert engine.submit(hanging_workflow(venue)).result(
            timeout=WAIT_S).error_type == "NodeStuck"
        healthy = Workflow("healthy", nodes=[Node("venue", lambda ctx: 1)])  # same node id
        assert engine.submit(healthy).result(timeout=WAIT_S).status == "completed"
    finally:
        venue.release.set()


def test_a_refused_action_is_not_left_for_reconciliation(make_engine: EngineFactory,
                                                        tmp_path: Path) -> None:
    """Its intent was committed as it was admitted; it is marked never called (not
    `failed`, which says the function was called and raised)."""
    venue = Venue()
    engine = make_engine(journal_config(tmp_path / "data",
                                       daemon={"max_stuck_runs_per_node": 1}))
    flow = hanging_workflow(venue, "action")
    try:
        stuck = engine.submit(flow).result(timeout=WAIT_S)
        assert stuck.error_type == "NodeTimeout"
        refused = engine.submit(flow).result(timeout=WAIT_S)
        assert refused.error_type == "NodeStuck" and venue.calls == 1
        unresolved = {i["execution_id"] for i in engine.intents(unresolved=True)}
        assert unresolved == {stuck.execution_id}  # the one that was called, only
        outcomes = {i["execution_id"]: i["outcome"] for i in engine.intents(unresolved=False)}
        assert outcomes[refused.execution_id] == "not_started"  # not "failed": never called
    finally:
        venue.release.set()
