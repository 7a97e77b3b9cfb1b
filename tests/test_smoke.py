from actors import Engine, Node, Workflow
from tests.conftest import Recorder


def test_three_node_chain_completes_with_contract_events(engine: Engine,
                                                         recorder: Recorder) -> None:
    wf = Workflow("chain", nodes=[
        Node("p", lambda ctx: {"price": 1.0}, category="provider"),
        Node("c", lambda ctx: ctx.upstream["p"]["price"] > 0, category="condition",
             depends_on=["p"]),
        Node("a", lambda ctx: {"order": ctx.idempotency_key}, category="action",
             depends_on=["c"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    assert result.results["a"] == {"order": f"{result.execution_id}:a"}
    assert recorder.types(result.execution_id)[0] == "execution_started"
    assert recorder.types(result.execution_id)[-1] == "execution_completed"
