"""An in-process engine started with `[transport]`, probed as an operator would: OS-picked
ports, a stop from a signal handler, the control ops of an engine without a journal. Real
sockets on 127.0.0.1 with ports the OS picks; every wait has a deadline."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from actors import Config, Engine, Node, NodeContext, Workflow

#: The longest any single wait in these tests may take before the test fails.
WAIT_S = 10.0


def _config() -> Config:
    return Config.from_dict({"transport": {"events": "tcp://127.0.0.1:*",
                                           "control": "tcp://127.0.0.1:*",
                                           "heartbeat_s": 0.2}})


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine.start(_config())
    yield engine
    engine.stop()


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    yield context
    context.destroy(linger=0)


# -- OS-picked ports -----------------------------------------------------------------------

def test_the_caller_learns_the_ports_the_os_picked(engine: Engine,
                                                   zmq_context: zmq.Context[Any]) -> None:
    """`tcp://127.0.0.1:*` binds a free port, which only the engine knew (a private
    attribute): `engine.endpoints` names both, and they answer."""
    endpoints = engine.endpoints
    assert endpoints is not None and set(endpoints) == {"events", "control"}
    for endpoint in endpoints.values():
        assert endpoint.startswith("tcp://127.0.0.1:") and not endpoint.endswith((":*", ":0"))
    with zmq_context.socket(zmq.REQ) as req, zmq_context.socket(zmq.SUB) as sub:
        req.linger = sub.linger = 0
        req.connect(endpoints["control"])
        req.send(msgpack.packb({"v": 1, "op": "ping"}))
        assert req.poll(int(WAIT_S * 1000)), "no reply on the control endpoint"
        assert msgpack.unpackb(req.recv())["result"]["pong"] is True
        sub.connect(endpoints["events"])
        sub.subscribe(b"system/heartbeat")
        assert sub.poll(int(WAIT_S * 1000)), "no heartbeat on the events endpoint"
        assert msgpack.unpackb(sub.recv_multipart()[1])["type"] == "heartbeat"
    engine.stop()
    assert engine.endpoints == endpoints  # still says what it had bound


def test_an_engine_without_a_transport_section_has_no_endpoints() -> None:
    engine = Engine.start()
    try:
        assert engine.endpoints is None
    finally:
        engine.stop()


# -- engine.stop() from a signal handler ---------------------------------------------------

def test_a_signal_handler_s_stop_during_the_main_thread_s_stop_returns_at_once(
        engine: Engine) -> None:
    """`signal.signal(SIGTERM, lambda *_: engine.stop())`, and the signal lands while the
    main thread is in `engine.stop()` itself (a second Ctrl-C): the handler runs on the
    main thread, so waiting for the first stop to finish waited for itself, for the
    timeout plus the drains (19 s; for ever with timeout=None), before the stop went on."""
    main = threading.main_thread()
    assert threading.current_thread() is main  # signal handlers run on the main thread
    handled = threading.Event()
    handler_took: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        began = time.monotonic()
        try:
            engine.stop()
        finally:
            handler_took.append(time.monotonic() - began)
            handled.set()

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "execution_cancelled":  # the main thread is in stop()
            signal.pthread_kill(main.ident or 0, signal.SIGUSR1)
            handled.wait(WAIT_S)  # that stop drains this subscription: it is still under way

    started = threading.Event()

    def running(ctx: NodeContext) -> int:
        started.set()
        ctx.cancelled.wait(WAIT_S)
        return 1

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        engine.subscribe(on_event)
        handle = engine.submit(Workflow("stopped_by_signal", [Node("n", running)]))
        assert started.wait(WAIT_S)
        engine.stop()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled.is_set(), "the signal never arrived during the stop"
    assert handler_took[0] < 2.0, f"the handler's stop took {handler_took[0]:.1f} s"
    assert handle.result(timeout=0).status == "cancelled"
    assert not engine.ref.is_alive()
