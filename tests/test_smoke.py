from actors import Engine, Node, Workflow
from tests.conftest import Recorder


def test_three_node_chain_completes_with_contract_events(engine: Engine,
                                                         recorder: Recorder) -> None:
    """The whole stream of a three-node chain on a fresh engine, event by event."""
    wf = Workflow("chain", nodes=[
        Node("p", lambda ctx: {"price": 1.0}, category="provider"),
        Node("c", lambda ctx: ctx.upstream["p"]["price"] > 0, category="condition",
             depends_on=["p"]),
        Node("a", lambda ctx: {"order": ctx.idempotency_key}, category="action",
             depends_on=["c"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    assert result.results == {"p": {"price": 1.0}, "c": True,
                              "a": {"order": f"{result.execution_id}:a"}}
    events = recorder.events  # result() returns after subscribers got the terminal event
    assert [(e["type"], e.get("node_id")) for e in events] == [
        ("execution_started", None),
        ("node_started", "p"), ("node_completed", "p"), ("progress", None),
        ("node_started", "c"), ("node_completed", "c"), ("progress", None),
        ("node_started", "a"), ("node_completed", "a"),
        ("execution_completed", None),
    ]
    # Nothing else was published: seq and wseq both count 1, 2, 3 ... from the start.
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["wseq"] for e in events] == list(range(1, len(events) + 1))
    for e in events:
        assert (e["execution_id"], e["correlation_id"], e["workflow_id"]) == (
            result.execution_id, result.execution_id, "chain"), e
    categories = {e["node_id"]: e["node_category"] for e in events
                  if e["type"] == "node_started"}
    assert categories == {"p": "provider", "c": "condition", "a": "action"}
    assert [e["outputs"] for e in events if e["type"] == "node_completed"] == [
        {"price": 1.0}, True, {"order": f"{result.execution_id}:a"}]
    assert [e["nodes_completed"] for e in events if e["type"] == "progress"] == [1, 2]
    terminal = events[-1]
    assert (terminal["status"], terminal["results"]) == ("completed", result.results)
