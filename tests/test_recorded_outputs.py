"""What events and the journal record of a node's output, and of a submit's inputs, is
that value as it was produced: a later change to the object (a downstream node writing into
`ctx.upstream`, the node keeping and reusing what it returned, a submitter changing its
inputs) reaches neither. The events used to hold the object itself and pack it lazily, so
a subscriber, the terminal event's `results` and the journal could record a value the node
never returned."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from actors import Engine, Node, NodeContext, Workflow
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import Disk, all_events, journal_config, journal_of

RETURNED: dict[str, Any] = {"bid": [100.0, 99.5], "depth": {"levels": 2}}


def changing_workflow(changed: threading.Event) -> Workflow:
    """`quote` returns fresh plain data; `trade`, downstream, changes it in place (and
    the quote node's own kept reference is the same object)."""
    kept: list[dict[str, Any]] = []

    def quote(ctx: NodeContext) -> dict[str, Any]:
        book = {"bid": list(RETURNED["bid"]), "depth": dict(RETURNED["depth"])}
        kept.append(book)
        return book

    def trade(ctx: NodeContext) -> str:
        book = ctx.upstream["quote"]
        book["bid"].append(1.0)
        book["depth"]["levels"] = 3
        book["spoofed"] = True
        changed.set()
        return "done"

    return Workflow("changing", nodes=[
        Node("quote", quote, category="provider"),
        Node("trade", trade, depends_on=["quote"]),
    ])


def quote_outputs(events: list[dict[str, Any]], execution_id: str) -> list[Any]:
    return [e["outputs"] for e in events if e["type"] == "node_completed"
            and e["execution_id"] == execution_id and e["node_id"] == "quote"]


def test_a_subscriber_reading_after_a_downstream_change_gets_the_output_as_returned(
        make_engine: EngineFactory) -> None:
    engine: Engine = make_engine()
    changed, first_seen = threading.Event(), threading.Event()
    got: list[dict[str, Any]] = []

    def slow_reader(event: dict[str, Any]) -> None:  # reads on only once trade has run
        got.append(event)
        first_seen.set()
        assert changed.wait(10)

    engine.subscribe(slow_reader)
    handle = engine.submit(changing_workflow(changed))
    result = handle.result(timeout=10)
    assert result.status == "completed" and first_seen.is_set()
    assert quote_outputs(got, handle.execution_id) == [RETURNED]
    [terminal] = [e for e in got if e["type"] == "execution_completed"]
    assert terminal["results"]["quote"] == RETURNED


def test_the_journal_committing_after_a_downstream_change_records_the_output_as_returned(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine: Engine = make_engine(journal_config(tmp_path))
    disk = Disk(journal_of(engine))
    changed = threading.Event()
    disk.hold()  # nothing is committed (so packed for the journal) until trade has run
    try:
        handle = engine.submit(changing_workflow(changed))
        assert changed.wait(10)
    finally:
        disk.release()
    assert handle.result(timeout=10).status == "completed"
    assert quote_outputs(all_events(engine), handle.execution_id) == [RETURNED]
    record = engine.execution(handle.execution_id)
    assert record is not None and record["nodes"]["quote"]["outputs"] == RETURNED
    [terminal] = [e for e in all_events(engine) if e["type"] == "execution_completed"]
    assert terminal["results"]["quote"] == RETURNED


def test_inputs_changed_by_the_submitter_after_submit_are_recorded_as_submitted(
        make_engine: EngineFactory) -> None:
    engine: Engine = make_engine()
    release, first_seen = threading.Event(), threading.Event()
    got: list[dict[str, Any]] = []

    def slow_reader(event: dict[str, Any]) -> None:
        got.append(event)
        first_seen.set()
        assert release.wait(10)

    engine.subscribe(slow_reader)
    noop = Workflow("noop", nodes=[Node("n", lambda ctx: 1)])
    engine.submit(noop)  # the reader stops at its first event: the next ones wait
    assert first_seen.wait(10)
    inputs: dict[str, Any] = {"levels": [1, 2], "limits": {"max": 5}}
    handle = engine.submit(noop, inputs=inputs)
    inputs["levels"].append(3)
    inputs["limits"]["max"] = 500
    release.set()
    handle.result(timeout=10)
    [started] = [e for e in got if e["type"] == "execution_started"
                 and e["execution_id"] == handle.execution_id]
    assert started["inputs"] == {"levels": [1, 2], "limits": {"max": 5}}


def test_result_results_are_the_outputs_as_returned_and_user_objects_the_nodes_own(
        make_engine: EngineFactory) -> None:
    """`result().results` agrees with the events and the journal: plain data as returned
    (a downstream change does not reach it); any other object is the node's own."""
    engine: Engine = make_engine()

    class Position:  # not plain data: events carry its text, results the object
        def __init__(self) -> None:
            self.size = 1

    position = Position()
    wf = Workflow("changing_with_object", nodes=[
        *changing_workflow(threading.Event()).nodes,
        Node("position", lambda ctx: position, category="provider"),
    ])
    result = engine.submit(wf).result(timeout=10)
    assert result.status == "completed"
    assert result.results["quote"] == RETURNED
    assert result.results["position"] is position
