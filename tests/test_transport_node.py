"""A client nobody here wrote the library for: Node.js (zeromq + @msgpack/msgpack from the
npm registry), written from docs/protocol.md alone, drives the control socket and follows
the stream: ping, status, submit, heartbeat, paged replay, live events, seq contiguity."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.conftest import NODE_DIR
from tests.transport_fakes import Child, FakeHandler, FakeLog, workflow_events
from transport import ControlServer, Publisher

BEFORE, LIVE = 250, 300


@pytest.fixture
def daemon() -> Iterator[tuple[FakeLog, Publisher, ControlServer]]:
    log = FakeLog()
    publisher = Publisher("tcp://127.0.0.1:*", log, heartbeat_s=0.5)
    control = ControlServer("tcp://127.0.0.1:*", FakeHandler(log))
    publisher.start()
    control.start()
    yield log, publisher, control
    publisher.stop()
    control.stop()


def test_a_nodejs_client_written_from_the_protocol_doc(
        node: str, daemon: tuple[FakeLog, Publisher, ControlServer]) -> None:
    log, publisher, control = daemon
    log.append(workflow_events("w", BEFORE))  # before the client exists: replay only
    expected_last = BEFORE + 1 + LIVE  # + the submit's execution_started
    assert publisher.wait_sent(BEFORE, 10.0)
    with Child([node, str(NODE_DIR / "client.mjs"), publisher.endpoint, control.endpoint,
                str(expected_last)]) as child:
        line = child.line(60)
        assert line.startswith("live "), line
        for _ in range(LIVE // 50):
            log.append(workflow_events("w", 50))
        result = json.loads(child.line(60))
    assert "error" not in result, result["error"]
    assert result["pong"] and result["statusOk"] and result["unknownOpCode"] == "unknown_op"
    assert result["executionId"].startswith("exec_w_")
    assert result["heartbeat"] == {"hasSeq": False, "epoch": publisher.epoch,
                                   "type": "heartbeat"}
    assert result["count"] == expected_last and result["contiguous"]
    assert result["outOfOrder"] == 0 and result["sawSubmitted"] and result["topicsOk"]
    assert result["replayCalls"] >= 3  # 251 events in pages of 100
