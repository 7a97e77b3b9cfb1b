"""Every line a node writes carries its execution id (structlog contextvars and ctx.log)."""

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog

from actors import Engine, Node, NodeContext, Workflow
from actors.logs import LibraryThrottle
from tests.journal_helpers import REPO


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


_STDLIB_CHILD = """
import logging
from actors import logs
logs.configure(fmt="json", level="info")
logs.configure(fmt="json", level="info")  # (again: still one line per record)
try:
    raise ValueError("boom")
except ValueError:
    logging.getLogger("websockets.server").exception("opening handshake failed")
logging.getLogger("websockets.server").info("a GET: not shown")
for _ in range(3):  # a peer repeating what made it: held back, counted
    logging.getLogger("websockets.server").error("opening handshake failed")
logging.getLogger("zmq.auth").error("Failed to load CURVE certs from %s", "keys/")
"""


def test_the_standard_librarys_logging_comes_out_as_our_json_lines() -> None:
    """websockets and zmq.auth log through `logging`: with no handler, Python's last-resort
    one printed plain text and tracebacks into the daemon's JSON lines."""
    proc = subprocess.run([sys.executable, "-c", _STDLIB_CHILD], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [(x["logger"], x["level"], x["event"]) for x in lines] == [
        ("websockets.server", "error", "opening handshake failed"),
        ("zmq.auth", "error", "Failed to load CURVE certs from keys/")]
    assert "ValueError: boom" in lines[0]["exception"]
    assert all(x["timestamp"].endswith("Z") for x in lines)


def test_a_library_line_repeated_is_held_back_then_counted() -> None:
    clock = [100.0]
    throttle = LibraryThrottle(10.0, monotonic=lambda: clock[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("websockets.server", logging.ERROR, "f", 1, msg, None, None)

    first = record("unexpected internal error")
    assert throttle.filter(first) and not hasattr(first, "suppressed")
    assert [throttle.filter(record("unexpected internal error")) for _ in range(4)] == [
        False] * 4
    assert throttle.filter(record("another message"))

    def formatted(*args: object) -> logging.LogRecord:
        return logging.LogRecord("strategy", logging.WARNING, "f", 1, "order %s failed",
                                 args, None)

    # Each message as written is its own: a workflow's lines with different figures.
    assert throttle.filter(formatted("a1")) and throttle.filter(formatted("a2"))
    assert not throttle.filter(formatted("a1"))
    clock[0] += 10.0
    later = record("unexpected internal error")
    assert throttle.filter(later) and getattr(later, "suppressed", None) == 4
