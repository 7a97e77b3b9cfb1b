"""The event sink: outputs (journal, publisher) get each batch in seq order before any
subscriber does."""

from typing import Any

from actors import Engine, Node, Workflow


def test_outputs_see_every_batch_in_order_before_subscribers(engine: Engine) -> None:
    order: list[tuple[str, int]] = []

    def output(batch: list[dict[str, Any]]) -> None:
        order.extend(("output", e["seq"]) for e in batch)

    engine.sink.add_output(output)
    engine.subscribe(lambda e: order.append(("subscriber", e["seq"])))
    wf = Workflow("ev", nodes=[Node("a", lambda ctx: 1), Node("b", lambda ctx: 2)])
    for _ in range(20):
        engine.submit(wf).result(timeout=5)
    output_seqs = [seq for who, seq in order if who == "output"]
    subscriber_seqs = [seq for who, seq in order if who == "subscriber"]
    assert output_seqs == subscriber_seqs == list(range(1, len(output_seqs) + 1))
    for seq in output_seqs:
        assert order.index(("output", seq)) < order.index(("subscriber", seq))
