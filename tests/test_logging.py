"""Every line a node writes carries its execution id (structlog contextvars and ctx.log)."""

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from actors import Engine, Node, NodeContext, Workflow


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    old = structlog.get_config()
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars,
                    structlog.processors.JSONRenderer()],
        logger_factory=structlog.PrintLoggerFactory(buffer),
        wrapper_class=structlog.make_filtering_bound_logger(0),
        cache_logger_on_first_use=False)
    yield buffer
    structlog.configure(**old)


def test_plain_structlog_lines_in_a_node_carry_execution_and_node(
        engine: Engine, log_lines: io.StringIO) -> None:
    def node(ctx: NodeContext) -> int:
        structlog.get_logger().info("inside")
        ctx.log.info("via_ctx")
        return 1

    wf = Workflow("logged", nodes=[Node("a", node), Node("b", node, depends_on=["a"])])
    first = engine.submit(wf).result(timeout=5)
    second = engine.submit(wf).result(timeout=5)
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    inside = [line for line in lines if line["event"] == "inside"]
    via_ctx = [line for line in lines if line["event"] == "via_ctx"]
    assert [(x["execution_id"], x["node_id"]) for x in inside] == [
        (first.execution_id, "a"), (first.execution_id, "b"),
        (second.execution_id, "a"), (second.execution_id, "b")]
    assert [x["execution_id"] for x in via_ctx] == [first.execution_id] * 2 + [
        second.execution_id] * 2
    assert all(x["workflow_id"] == "logged" for x in via_ctx)
