"""In a run, `ctx.inputs` and `ctx.upstream` are the node's own top-level dicts
(NodeContext's docstring, README): a key a node adds, replaces or deletes changes nothing
another node, the events or the result see. The outputs inside are shared, not copied
(documented; not tested here as a guarantee)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from actors import Node, NodeContext, Workflow
from tests.conftest import EngineFactory, Recorder

WAIT_S = 10.0

# What a careless node does to its context.


def add_upstream_key(ctx: NodeContext) -> None:
    ctx.upstream["x"] = 1  # type: ignore[index]


def replace_upstream_output(ctx: NodeContext) -> None:
    ctx.upstream["price"] = {"p": 0}  # type: ignore[index]


def delete_upstream_output(ctx: NodeContext) -> None:
    del ctx.upstream["price"]  # type: ignore[attr-defined]


def change_input(ctx: NodeContext) -> None:
    ctx.inputs["threshold"] = 0  # type: ignore[index]


def add_input(ctx: NodeContext) -> None:
    ctx.inputs["injected"] = True  # type: ignore[index]


def delete_input(ctx: NodeContext) -> None:
    del ctx.inputs["threshold"]  # type: ignore[attr-defined]


WRITES = [add_upstream_key, replace_upstream_output, delete_upstream_output, change_input,
          add_input, delete_input]


def workflow(write: Callable[[NodeContext], Any], seen: dict[str, Any]) -> Workflow:
    """price -> writer (does `write`) -> later (notes what it is given)."""

    def later(ctx: NodeContext) -> None:
        seen["inputs"] = dict(ctx.inputs)
        seen["upstream"] = dict(ctx.upstream)

    return Workflow("ctx_writes", nodes=[
        Node("price", lambda ctx: {"p": 1}, category="provider"),
        Node("writer", write, depends_on=["price"]),
        Node("later", later, depends_on=["writer"]),
    ])


@pytest.mark.parametrize("write", WRITES, ids=[w.__name__ for w in WRITES])
def test_a_node_writing_to_its_context_changes_nothing_others_see(
        make_engine: EngineFactory, write: Callable[[NodeContext], Any]) -> None:
    engine = make_engine()
    events = Recorder()
    engine.subscribe(events)
    seen: dict[str, Any] = {}
    result = engine.submit(workflow(write, seen), inputs={"threshold": 2.5}).result(WAIT_S)
    assert result.status == "completed", result.error
    assert seen["inputs"] == {"threshold": 2.5}
    assert seen["upstream"] == {"price": {"p": 1}, "writer": None}
    assert dict(result.results) == {"price": {"p": 1}, "writer": None, "later": None}
    [started] = events.wait_type("execution_started")
    assert started["inputs"] == {"threshold": 2.5}


def test_a_node_may_hand_its_context_on_as_plain_dicts(make_engine: EngineFactory) -> None:
    """What a node returns from its context is plain data: JSON takes it as it is."""
    engine = make_engine()
    wf = Workflow("ctx_pass_on", nodes=[
        Node("price", lambda ctx: {"p": 1, "inputs": ctx.inputs}, category="provider"),
        Node("echo", lambda ctx: ctx.upstream, category="transform", depends_on=["price"])])
    result = engine.submit(wf, inputs={"a": 1}).result(WAIT_S)
    assert result.status == "completed", result.error
    assert isinstance(result.results["echo"], dict)
    assert json.loads(json.dumps(dict(result.results))) == {
        "price": {"p": 1, "inputs": {"a": 1}}, "echo": {"price": {"p": 1, "inputs": {"a": 1}}}}


def test_two_threads_of_a_node_reading_cancelled_first_at_once_get_one_event(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A node's own helper threads reading `ctx.cancelled` for the first time together each
    made an Event, and a cancel set only the one kept: the other thread slept through it."""
    made: list[threading.Event] = []
    both_in = threading.Event()
    real_event = threading.Event

    def slow_event() -> threading.Event:  # the window between the look and the store, held
        event = real_event()
        made.append(event)
        if len(made) == 2:
            both_in.set()
        both_in.wait(0.3)  # (with the guard the second never gets here: no second Event)
        return event

    ctx = NodeContext(inputs={}, upstream={}, execution_id="exec_w_00000001",
                      workflow_id="w", node_id="n", attempt=1)
    seen: list[threading.Event] = []
    go = threading.Event()

    def read() -> None:
        go.wait(WAIT_S)
        seen.append(ctx.cancelled)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    # (patched once the threads run: starting a thread makes Events of its own)
    monkeypatch.setattr(threading, "Event", slow_event)
    go.set()
    for reader in readers:
        reader.join(WAIT_S)
    monkeypatch.undo()
    assert len(made) == 1 and seen == [made[0], made[0]]
    ctx.cancel()
    assert made[0].is_set()
