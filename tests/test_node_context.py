"""`ctx.inputs` and `ctx.upstream` are read-only views (NodeContext's docstring, README): a
node cannot change what the execution's other nodes are given. The outputs inside are
shared, not copied (documented; not tested here as a guarantee)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytest

from actors import Node, NodeContext, Workflow
from tests.conftest import EngineFactory

WAIT_S = 10.0

# What a careless node does to its context (mypy knows they are read-only: hence ignores).

def add_upstream_key(ctx: NodeContext) -> None:
    ctx.upstream["x"] = 1  # type: ignore[index]


def replace_upstream_output(ctx: NodeContext) -> None:
    ctx.upstream["price"] = {"p": 0}  # type: ignore[index]


def delete_upstream_output(ctx: NodeContext) -> None:
    del ctx.upstream["price"]  # type: ignore[attr-defined]


def change_input(ctx: NodeContext) -> None:
    ctx.inputs["threshold"] = 0  # type: ignore[index]


def delete_input(ctx: NodeContext) -> None:
    del ctx.inputs["threshold"]  # type: ignore[attr-defined]


WRITES = [add_upstream_key, replace_upstream_output, delete_upstream_output, change_input,
          delete_input]


def workflow(write: Callable[[NodeContext], Any], seen: dict[str, Any]) -> Workflow:
    """price -> writer (tries `write`, notes the error) -> later (notes what it is given)."""

    def writer(ctx: NodeContext) -> None:
        try:
            write(ctx)
        except TypeError as exc:
            seen["error"] = exc

    def later(ctx: NodeContext) -> None:
        seen["inputs"] = dict(ctx.inputs)
        seen["upstream"] = dict(ctx.upstream)

    return Workflow("ctx_writes", nodes=[
        Node("price", lambda ctx: {"p": 1}, category="provider"),
        Node("writer", writer, depends_on=["price"]),
        Node("later", later, depends_on=["writer"]),
    ])


@pytest.mark.parametrize("write", WRITES, ids=[w.__name__ for w in WRITES])
def test_a_node_cannot_change_the_inputs_or_upstream_later_nodes_see(
        make_engine: EngineFactory, write: Callable[[NodeContext], Any]) -> None:
    engine = make_engine()
    seen: dict[str, Any] = {}
    result = engine.submit(workflow(write, seen), inputs={"threshold": 2.5}).result(WAIT_S)
    assert result.status == "completed", result.error
    assert isinstance(seen.get("error"), TypeError), "the write went through"
    assert seen["inputs"] == {"threshold": 2.5}
    assert seen["upstream"] == {"price": {"p": 1}, "writer": None}


def test_a_write_the_node_does_not_catch_fails_it_with_a_clear_error(
        make_engine: EngineFactory) -> None:
    engine = make_engine()

    wf = Workflow("ctx_write_fails", nodes=[
        Node("price", lambda ctx: {"p": 1}, category="provider"),
        Node("writer", replace_upstream_output, depends_on=["price"], max_restarts=0)])
    result = engine.submit(wf).result(WAIT_S)
    assert (result.status, result.error_type) == ("failed", "TypeError")
    assert "does not support item assignment" in (result.error or "")
    assert result.results["price"] == {"p": 1}


def test_a_context_built_by_hand_is_read_only_too() -> None:
    """What a node's own unit test builds behaves as the engine's does."""
    inputs, upstream = {"threshold": 2.5}, {"price": {"p": 1}}
    ctx = NodeContext(inputs=inputs, upstream=upstream, execution_id="e", workflow_id="w",
                      node_id="n", attempt=1)
    for view in (ctx.inputs, ctx.upstream):
        assert isinstance(view, Mapping)
        with pytest.raises(TypeError):
            view["x"] = 1  # type: ignore[index]
    assert dict(ctx.inputs) == inputs and dict(ctx.upstream) == upstream
