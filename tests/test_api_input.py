"""Bad input to the Python API (README): "Bad input to the API raises TypeError/
ValueError or a TradeloomError naming the argument (`submit(123)`, non-mapping `inputs`,
non-int `priority`, non-bool node flags)", and "Results and events handed to callers are
not shared mutable state".

A refused call must leave nothing behind: no execution started, no running or queued slot
taken. Real engines; waits are on events and results with timeouts.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors import Engine, Node, NodeContext, TradeloomError, Workflow, WorkflowDefinitionError
from actors.copies import deep_copy, plain_copy
from actors.messages import Submit
from tests.conftest import EngineFactory, Recorder


def plain() -> Workflow:
    return Workflow("plain", nodes=[Node("n", lambda ctx: 1)])


def assert_nothing_taken(engine: Engine, running: int = 0, queued: int = 0) -> None:
    status = engine.status()
    assert (status["running"], status["queued"]) == (running, queued)
    assert status["counts"].get("refused", 0) == 0


@pytest.fixture
def busy_engine(make_engine: EngineFactory) -> Iterator[Engine]:
    """max_concurrent_executions = 1, and that one slot held: a new execution would queue."""
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    entered, release = threading.Event(), threading.Event()

    def hold(ctx: NodeContext) -> str:
        entered.set()
        release.wait(10)
        return "held"

    handle = engine.submit(Workflow("holder", nodes=[Node("hold", hold)]))
    assert entered.wait(5)
    yield engine
    release.set()
    assert handle.result(timeout=5).status == "completed"


# -- submit: workflow ----------------------------------------------------------------------

@pytest.mark.parametrize("workflow", [123, None, 1.5, b"plain", ["plain"], object()],
                         ids=["int", "None", "float", "bytes", "list", "object"])
def test_submit_of_something_that_is_no_workflow_is_a_type_error_naming_it(
        engine: Engine, workflow: Any) -> None:
    with pytest.raises(TypeError, match="workflow"):
        engine.submit(workflow)
    assert_nothing_taken(engine)
    assert engine.workflows == []


# -- submit: inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("inputs", [[1, 2], "threshold", 5, [("a", 1)], {1, 2}],
                         ids=["list", "str", "int", "list_of_pairs", "set"])
def test_inputs_that_are_not_a_mapping_are_a_type_error_naming_inputs(
        engine: Engine, inputs: Any) -> None:
    with pytest.raises(TypeError, match="inputs"):
        engine.submit(plain(), inputs=inputs)
    assert_nothing_taken(engine)


def test_any_mapping_is_accepted_as_inputs(engine: Engine) -> None:
    from types import MappingProxyType

    wf = Workflow("reads_inputs", nodes=[Node("n", lambda ctx: dict(ctx.inputs))])
    for inputs in [None, {}, {"a": 1}, MappingProxyType({"a": 1})]:
        result = engine.submit(wf, inputs=inputs).result(timeout=5)
        assert result.status == "completed", (inputs, result.error)
        assert result.results["n"] == dict(inputs or {})


# -- submit: priority ----------------------------------------------------------------------

BAD_PRIORITIES = pytest.mark.parametrize("priority", ["high", 1.5, None, [1]],
                                         ids=["str", "float", "None", "list"])


@BAD_PRIORITIES
def test_a_non_int_priority_is_a_type_error_when_the_execution_would_run_at_once(
        engine: Engine, priority: Any) -> None:
    with pytest.raises(TypeError, match="priority"):
        engine.submit(plain(), priority=priority)
    assert_nothing_taken(engine)
    assert engine.submit(plain(), priority=3).result(timeout=5).status == "completed"


@BAD_PRIORITIES
def test_a_non_int_priority_is_a_type_error_when_the_execution_would_queue(
        busy_engine: Engine, priority: Any) -> None:
    with pytest.raises(TypeError, match="priority"):
        busy_engine.submit(plain(), priority=priority)
    assert_nothing_taken(busy_engine, running=1)
    queued = busy_engine.submit(plain(), priority=-2)  # the queue still works
    assert not queued.done()
    assert_nothing_taken(busy_engine, running=1, queued=1)


def test_a_non_int_priority_in_a_submit_message_is_refused_too(engine: Engine) -> None:
    with pytest.raises(TypeError, match="priority"):
        engine.ref.ask(Submit(workflow=plain(), priority="high"), timeout=5)  # type: ignore[arg-type]
    assert_nothing_taken(engine)


# -- node flags ----------------------------------------------------------------------------

@pytest.mark.parametrize(("flag", "value"), [
    ("idempotent", "no"), ("idempotent", "yes"), ("idempotent", 1), ("idempotent", 0.0),
    ("reduces_risk", 1), ("reduces_risk", "true"), ("reduces_risk", 0), ("reduces_risk", ""),
])
@pytest.mark.parametrize("category", ["action", "transform"])
def test_node_flags_must_be_real_bools(flag: str, value: Any, category: str) -> None:
    with pytest.raises(WorkflowDefinitionError) as exc:
        Node("flagged", lambda ctx: 1, category=category, **{flag: value})
    assert exc.value.node_id == "flagged"
    assert "flagged" in str(exc.value) and flag in str(exc.value), str(exc.value)


@pytest.mark.parametrize("value", [True, False])
def test_bool_node_flags_are_accepted(value: bool) -> None:
    node = Node("flagged", lambda ctx: 1, category="action", idempotent=value,
                reduces_risk=value)
    assert (node.idempotent, node.reduces_risk) == (value, value)


# -- one workflow per id -------------------------------------------------------------------

def test_a_different_workflow_under_a_registered_id_is_refused(engine: Engine) -> None:
    """Registered explicitly (`register`, or `[[workflows]]` in the config), an id names one
    workflow. (A workflow built afresh for every submit and never registered stays fine:
    test_engine.py::test_workflows_built_per_execution_are_not_kept_alive.)"""
    first = Workflow("same_id", nodes=[Node("n", lambda ctx: "first")])
    other = Workflow("same_id", nodes=[Node("n", lambda ctx: "other")])
    engine.register(first)
    assert engine.submit(first).result(timeout=5).results == {"n": "first"}
    assert engine.submit(first).result(timeout=5).results == {"n": "first"}  # same object

    with pytest.raises((TradeloomError, ValueError)) as exc:
        engine.submit(other)
    assert "same_id" in str(exc.value), str(exc.value)
    assert_nothing_taken(engine)
    # The registered one is still the one that runs by id.
    assert engine.submit("same_id").result(timeout=5).results == {"n": "first"}
    assert engine.workflows == ["same_id"]


def test_a_workflow_registered_with_defaults_may_be_submitted_as_the_object(
        engine: Engine, recorder: Recorder) -> None:
    wf = Workflow("registered", nodes=[Node("n", lambda ctx: 1)])
    engine.register(wf, bot_id="bot_r", strategy_id="strat_r")
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    started = [e for e in recorder.for_execution(result.execution_id)
               if e["type"] == "execution_started"]
    assert (started[0]["bot_id"], started[0]["strategy_id"]) == ("bot_r", "strat_r")


# -- events and results are not shared mutable state ---------------------------------------

def vandal(event: dict[str, Any]) -> None:
    """A subscriber that scribbles over what it is given."""
    kind = event["type"]
    if kind == "execution_started":
        event["inputs"]["threshold"] = 0.0
    elif kind == "node_completed" and event["node_id"] == "price":
        event["outputs"]["price"] = 0
        event["status"] = "vandalised"
    elif kind == "execution_completed":
        event["results"]["x"] = 1
        event["status"] = "vandalised"


class Snapshots:
    """A subscriber that keeps a deep copy of each event as it received it."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.done = threading.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(copy.deepcopy(event))
        if event["type"] == "execution_completed":
            self.done.set()

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def price_workflow(seen: Callable[[Any], None]) -> Workflow:
    def price(ctx: NodeContext) -> dict[str, float]:
        seen(ctx.inputs["threshold"])
        return {"price": 50_000.0}

    return Workflow("prices", nodes=[
        Node("price", price, category="provider"),
        Node("check", lambda ctx: ctx.upstream["price"]["price"] > 0, category="condition",
             depends_on=["price"]),
    ])


def test_a_subscriber_mutating_events_changes_neither_the_result_nor_other_subscribers(
        engine: Engine) -> None:
    engine.subscribe(vandal)  # first: it is called before the snapshotter
    snapshots = Snapshots()
    engine.subscribe(snapshots)
    thresholds: list[Any] = []

    handle = engine.submit(price_workflow(thresholds.append), inputs={"threshold": 10.0})
    result = handle.result(timeout=5)
    assert snapshots.done.wait(5)

    assert result.status == "completed"
    assert dict(result.results) == {"price": {"price": 50_000.0}, "check": True}
    assert thresholds == [10.0]  # the node saw the inputs as submitted
    (started,) = snapshots.of_type("execution_started")
    assert started["inputs"] == {"threshold": 10.0}
    completed = {e["node_id"]: e for e in snapshots.of_type("node_completed")}
    assert completed["price"]["outputs"] == {"price": 50_000.0}
    assert completed["price"]["status"] == "success"
    (terminal,) = snapshots.of_type("execution_completed")
    assert terminal["status"] == "completed"
    assert terminal["results"] == {"price": {"price": 50_000.0}, "check": True}
    # And the handle's result, read again afterwards, is still what the nodes returned.
    assert dict(handle.result(timeout=0).results) == {"price": {"price": 50_000.0},
                                                      "check": True}


def test_each_result_call_hands_out_outputs_of_its_own(engine: Engine) -> None:
    returned: list[dict[str, Any]] = []

    def quote(ctx: NodeContext) -> dict[str, Any]:
        output = {"px": 50_000.0, "levels": [[1.0, 2.0]], "pair": ("BTC", ["spot"])}
        returned.append(output)
        return output

    handle = engine.submit(Workflow("quotes", nodes=[Node("q", quote, category="provider")]))
    first = handle.result(timeout=5)
    first.results["q"]["px"] = 1.0
    first.results["q"]["levels"][0].append(99.0)
    first.results["q"]["pair"][1].append("perp")
    first.nodes["q"]["outputs"]["px"] = 2.0
    first.node_report["q"]["status"] = "tampered"  # type: ignore[index]

    second = handle.result(timeout=5)
    as_made = {"px": 50_000.0, "levels": [[1.0, 2.0]], "pair": ("BTC", ["spot"])}
    assert dict(second.results) == {"q": as_made}
    assert second.nodes["q"]["outputs"] == as_made
    assert second.nodes["q"]["status"] == "completed"
    assert returned == [as_made], "nor the node's own object"
    assert second.results["q"] is not returned[0]


def test_objects_other_than_plain_containers_are_handed_out_as_they_are(
        engine: Engine) -> None:
    class Client:
        """Owns a resource: a copy of it would be a second owner."""

        def __deepcopy__(self, memo: dict[int, Any]) -> Any:
            raise AssertionError("copied")

    client = Client()
    handle = engine.submit(Workflow("odd", nodes=[
        Node("o", lambda ctx: client), Node("m", lambda ctx: {"client": client, "n": [1]})]))
    result = handle.result(timeout=5)
    assert result.status == "completed"
    assert result.results["o"] is client
    mixed = handle.result(timeout=5).results["m"]
    assert mixed["client"] is client and mixed["n"] == [1]
    assert mixed is not result.results["m"] and mixed["n"] is not result.results["m"]["n"]


def test_shared_and_cyclic_containers_keep_their_shape_in_a_copy() -> None:
    shared = [1.0, 2.0]
    looped: list[Any] = ["head"]
    looped.append(looped)
    copied = plain_copy({"a": shared, "b": shared, "loop": looped})
    assert copied["a"] is copied["b"] and copied["a"] is not shared
    assert copied["loop"][1] is copied["loop"] and copied["loop"] is not looped
    nested: list[Any] = []
    deepest = nested
    for _ in range(100_000):  # past the recursion limit: handed out as it is
        deepest.append([])
        deepest = deepest[0]
    assert plain_copy(nested) is nested



def test_the_cache_copy_copies_other_objects_too_and_keeps_a_cycle() -> None:
    class Quote:
        def __init__(self) -> None:
            self.levels = [1.0]

    quote = Quote()
    looped: list[Any] = [quote]
    looped.append(looped)
    copied = deep_copy({"q": looped, "again": looped})
    assert copied["q"] is copied["again"] and copied["q"][1] is copied["q"]
    assert type(copied["q"][0]) is Quote and copied["q"][0] is not quote
    assert copied["q"][0].levels == [1.0] and copied["q"][0].levels is not quote.levels
