"""CONTRACT 7 and 8, claim by claim through the public API, as the contract's own snippets
write it: the places where the engine once differed from the contract's words."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pykka
import pytest
import zmq

from actors import Config, Engine, Node, TradeloomError, Workflow
from tests.ports import free_port

#: How long a socket test waits for a reply or an event before it fails.
SOCKET_WAIT_MS = 5000


def _transport() -> dict[str, Any]:
    return {"events": f"tcp://127.0.0.1:{free_port()}",
            "control": f"tcp://127.0.0.1:{free_port()}", "heartbeat_s": 0.5}


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


def _ping(context: zmq.Context[Any], endpoint: str) -> dict[str, Any]:
    req = context.socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, SOCKET_WAIT_MS)
    try:
        req.connect(endpoint)
        req.send(msgpack.packb({"v": 1, "op": "ping"}))
        reply: dict[str, Any] = msgpack.unpackb(req.recv())
        return reply
    finally:
        req.close()


def _frames_until(sub: zmq.Socket[Any], type_: str, deadline_s: float) -> list[dict[str, Any]]:
    """Payloads received until one of `type_` (inclusive); fails at the deadline."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if sub.poll(100):
            _topic, payload = sub.recv_multipart()
            got.append(msgpack.unpackb(payload))
            if got[-1]["type"] == type_:
                return got
    raise AssertionError(f"no {type_} within {deadline_s}s; got {[e['type'] for e in got]}")


def test_an_engine_started_with_a_transport_section_opens_the_event_and_control_sockets(
        zmq_context: zmq.Context[Any]) -> None:
    """CONTRACT 8: `Engine.start()  # embedded defaults, no sockets unless configured`; a
    config without [transport] opens none: so one with it opens both, and stop() frees them."""
    transport = _transport()
    engine = Engine.start(config=Config.from_dict({"transport": transport}))
    try:
        assert _ping(zmq_context, transport["control"])["result"]["pong"] is True
        sub = zmq_context.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.connect(transport["events"])
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        _frames_until(sub, "heartbeat", SOCKET_WAIT_MS / 1000)  # a subscription is live
        handle = engine.submit(Workflow("sock_wf", [Node("a", lambda ctx: 1)]))
        assert handle.result(timeout=5).status == "completed"
        events = _frames_until(sub, "execution_completed", SOCKET_WAIT_MS / 1000)
        assert {e.get("execution_id") for e in events if e["type"] != "heartbeat"} == {
            handle.execution_id}
        sub.close()
    finally:
        engine.stop()
    # stop() closed them: a new engine binds the same addresses.
    again = Engine.start(config=Config.from_dict({"transport": transport}))
    try:
        assert _ping(zmq_context, transport["control"])["ok"] is True
    finally:
        again.stop()



def test_an_engine_whose_address_is_taken_refuses_to_start_naming_it() -> None:
    transport = _transport()
    first = Engine.start(config=Config.from_dict({"transport": transport}))
    try:
        with pytest.raises(TradeloomError, match=transport["events"]):
            Engine.start(config=Config.from_dict({"transport": transport}))
    finally:
        first.stop()


def test_an_engine_refused_half_way_leaves_nothing_open(
        zmq_context: zmq.Context[Any], tmp_path: Path) -> None:
    """The event stream bound, the control address taken: the refusal frees the first,
    stops the engine's actors and closes its journal (a new engine opens both)."""
    transport = _transport()
    raw = {"daemon": {"data_dir": str(tmp_path)}, "transport": transport}
    taken = zmq_context.socket(zmq.ROUTER)
    taken.setsockopt(zmq.LINGER, 0)
    taken.bind(transport["control"])
    actors_before = len(pykka.ActorRegistry.get_all())
    with pytest.raises(TradeloomError, match=transport["control"]):
        Engine.start(config=Config.from_dict(raw))
    assert len(pykka.ActorRegistry.get_all()) == actors_before
    taken.close()
    engine = Engine.start(config=Config.from_dict(raw))  # the same events address, journal
    try:
        assert _ping(zmq_context, transport["control"])["ok"] is True
    finally:
        engine.stop()


# -- CONTRACT 8: bad input to the API raises TypeError/ValueError naming the argument ------

def test_a_non_number_result_timeout_is_a_type_error_naming_it(engine: Engine) -> None:
    handle = engine.submit(Workflow("timeout_arg", [Node("a", lambda ctx: 1)]))
    with pytest.raises(TypeError, match="timeout"):
        handle.result(timeout="5")  # type: ignore[arg-type]
    assert handle.result(timeout=5).status == "completed"


@pytest.mark.parametrize("bad, error", [("5", TypeError), (True, TypeError),
                                        (float("nan"), ValueError)])
def test_a_bad_result_timeout_is_refused_by_a_finished_handle_too(
        engine: Engine, bad: Any, error: type[Exception]) -> None:
    """Checked only on the waiting path, it was taken without a word once the execution
    had ended: whether `result(timeout="5")` raised depended on how fast the node ran."""
    handle = engine.submit(Workflow("timeout_done", [Node("a", lambda ctx: 1)]))
    assert handle.result(timeout=5).status == "completed"
    with pytest.raises(error, match="timeout"):
        handle.result(timeout=bad)


def test_journal_queries_refuse_ill_typed_arguments_naming_them(tmp_path: Path) -> None:
    engine = Engine.start(config=Config.from_dict({"daemon": {"data_dir": str(tmp_path)}}))
    try:
        handle = engine.submit(Workflow("query_args", [
            Node("t", lambda ctx: "sent", category="action")]))
        assert handle.result(timeout=5).status == "completed"
        with pytest.raises(TypeError, match="unresolved"):
            engine.intents(unresolved="no")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="execution_id"):
            engine.execution(5)  # type: ignore[arg-type]
        # Well-typed, they answer as before.
        assert [i["node_id"] for i in engine.intents(unresolved=False)] == ["t"]
        found = engine.execution(handle.execution_id)
        assert found is not None and found["status"] == "completed"
    finally:
        engine.stop()


def test_executions_refuses_a_status_the_contract_does_not_name(tmp_path: Path) -> None:
    """As the `executions` op answers `bad_request` for it: a typo'd status would otherwise
    read as "no such executions"."""
    engine = Engine.start(config=Config.from_dict({"daemon": {"data_dir": str(tmp_path)}}))
    try:
        handle = engine.submit(Workflow("status_arg", [Node("a", lambda ctx: 1)]))
        assert handle.result(timeout=5).status == "completed"
        with pytest.raises(ValueError, match="status"):
            engine.executions(status="complete")
        for status in ("queued", "running", "completed", "failed", "halted", "cancelled",
                       "interrupted", "refused"):
            found = engine.executions(status=status)
            assert [e["execution_id"] for e in found] == (
                [handle.execution_id] if status == "completed" else [])
    finally:
        engine.stop()
