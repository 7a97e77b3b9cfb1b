"""An in-process engine started with `[transport]`, probed as an operator would: OS-picked
ports, a stop from a signal handler, the control ops of an engine without a journal. Real
sockets on 127.0.0.1 with ports the OS picks; every wait has a deadline."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import structlog
import structlog.testing
import zmq

from actors import Config, ConfigError, Engine, Node, NodeContext, Workflow
from actors.execution import ExecutionHandle
from transport.client import ControlClient, InternalServerError, Subscriber

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


@pytest.mark.parametrize("port", ["65536", "65537", "74500", "99999"])
def test_a_port_past_65535_is_refused_naming_the_key(port: str) -> None:
    """libzmq takes a port modulo 65536: `tcp://127.0.0.1:74500` (7450 with a typo) bound
    port 8964, 65537 port 1, silently; the config accepted any five digits."""
    with pytest.raises(ConfigError, match=r"transport\.events"):
        Config.from_dict({"transport": {"events": f"tcp://127.0.0.1:{port}"}})
    with pytest.raises(ConfigError, match=r"transport\.control"):
        Config.from_dict({"transport": {"control": f"tcp://127.0.0.1:{port}"}})
    for fine in ("0", "1", "7450", "59999", "65535"):
        Config.from_dict({"transport": {"events": f"tcp://127.0.0.1:{fine}"}})


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_an_ipv6_loopback_endpoint_binds_and_the_clients_reach_it() -> None:
    """`tcp://[::1]:*` passes the config and counts as loopback, but ZeroMQ sockets leave
    IPv6 off: the bind failed ("No such device") and a client's connect never connected
    (DaemonUnreachable)."""
    engine = Engine.start(Config.from_dict({"transport": {
        "events": "tcp://[::1]:*", "control": "tcp://[::1]:*", "heartbeat_s": 0.2}}))
    try:
        endpoints = engine.endpoints
        assert endpoints is not None and endpoints["control"].startswith("tcp://[::1]:")
        with ControlClient(endpoints["control"], timeout=WAIT_S) as client:
            assert client.ping()["pong"] is True
        with Subscriber(endpoints["events"], endpoints["control"], timeout=WAIT_S) as sub:
            sub.wait_live(WAIT_S)
            assert sub.live
    finally:
        engine.stop()


# -- engine.stop() from a signal handler ---------------------------------------------------

def run_until_stop_signals(engine: Engine, handled: threading.Event) -> ExecutionHandle:
    """Start an execution that runs until cancelled, and have SIGUSR1 sent to the main
    thread once a stop cancels it (the main thread is then inside `engine.stop()`); the
    subscriber waits for `handled` (that stop drains it: it is still under way)."""

    def on_event(event: dict[str, Any]) -> None:
        if event["type"] == "execution_cancelled":
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
            handled.wait(WAIT_S)

    started = threading.Event()

    def running(ctx: NodeContext) -> int:
        started.set()
        ctx.cancelled.wait(WAIT_S)
        return 1

    engine.subscribe(on_event)
    handle = engine.submit(Workflow("stopped_by_signal", [Node("n", running)]))
    assert started.wait(WAIT_S)
    return handle


def test_a_signal_handler_s_stop_during_the_main_thread_s_stop_returns_at_once(
        engine: Engine) -> None:
    """`signal.signal(SIGTERM, lambda *_: engine.stop())`, and the signal lands while the
    main thread is in `engine.stop()` itself (a second Ctrl-C): the handler runs on the
    main thread, so waiting for the first stop to finish waited for itself, for the
    timeout plus the drains (19 s; for ever with timeout=None), before the stop went on."""
    assert threading.current_thread() is threading.main_thread()  # where handlers run
    handled = threading.Event()
    handler_took: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        began = time.monotonic()
        try:
            engine.stop()
        finally:
            handler_took.append(time.monotonic() - began)
            handled.set()

    previous = signal.signal(signal.SIGUSR1, on_signal)
    try:
        handle = run_until_stop_signals(engine, handled)
        engine.stop()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert handled.is_set(), "the signal never arrived during the stop"
    assert handler_took[0] < 2.0, f"the handler's stop took {handler_took[0]:.1f} s"
    assert handle.result(timeout=0).status == "cancelled"
    assert not engine.ref.is_alive()


# -- an engine without a journal behind the socket -----------------------------------------

def test_a_filtered_subscriber_follows_an_engine_that_keeps_no_journal(engine: Engine) -> None:
    """A `Subscriber` on one workflow replays the seqs between its events (other topics'
    traffic) through the control socket. Without data_dir the `replay` op answered
    `internal` (NoJournal) and the subscriber raised at the first heartbeat past its seq:
    it now gets an empty page saying nothing is kept, counts those seqs lost, goes on."""
    endpoints = engine.endpoints
    assert endpoints is not None
    other = Workflow("probe_other", [Node("x", lambda ctx: 1)])
    mine = Workflow("probe_mine", [Node("x", lambda ctx: 2)])
    with Subscriber(endpoints["events"], endpoints["control"],
                    topics=("workflow/probe_mine/",), timeout=WAIT_S) as sub:
        sub.wait_live(WAIT_S)
        for _ in range(3):
            assert engine.submit(other).result(timeout=WAIT_S).status == "completed"
        # A heartbeat (every 0.2 s) past our seq, before `mine` runs: its tail check
        # replays the other workflow's seqs.
        deadline = time.monotonic() + WAIT_S
        while sub.heartbeats < 3 and time.monotonic() < deadline:
            assert sub.next(timeout=0.1) is None
        handle = engine.submit(mine)
        assert handle.result(timeout=WAIT_S).status == "completed"
        types = []
        while "execution_completed" not in types and time.monotonic() < deadline:
            event = sub.next(timeout=0.1)
            if event is not None:
                assert event["execution_id"] == handle.execution_id
                types.append(event["type"])
        assert types[0] == "execution_started" and types[-1] == "execution_completed"
        assert sub.lost > 0  # the other workflow's seqs: not kept, said so


def test_journal_ops_of_an_engine_without_one_answer_without_an_error_log(
        engine: Engine) -> None:
    endpoints = engine.endpoints
    assert endpoints is not None
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs, \
                ControlClient(endpoints["control"], timeout=WAIT_S) as client:
            assert client.replay(1)["events"] == []
            with pytest.raises(InternalServerError, match="NoJournal"):
                client.execution("exec_wf_0123abcd")
    finally:
        structlog.configure(**saved)
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


class Interrupted(Exception):
    """What the test's signal handler raises in the middle of a stop (as Ctrl-C does)."""


def test_a_stop_cut_short_by_an_interrupt_is_finished_by_the_next_stop() -> None:
    """Ctrl-C during `engine.stop()` left its actors, sockets and threads running, and
    every later `stop()` returned at once: the ports stayed bound for the life of the
    process. The next `stop()` now goes through the shutdown again."""
    before = set(threading.enumerate())
    engine = Engine.start(_config())
    endpoints = engine.endpoints
    assert endpoints is not None
    interrupted = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        interrupted.set()
        raise Interrupted

    def swallowed(args: Any) -> None:  # (sys.UnraisableHookArgs)
        # Raised inside a weakref callback or a __del__ (a GC during the stop), Python
        # swallows it: a Ctrl-C there is lost to any program. Send it again.
        if isinstance(args.exc_value, Interrupted):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
        else:
            hook(args)

    previous, hook = signal.signal(signal.SIGUSR1, on_signal), sys.unraisablehook
    sys.unraisablehook = swallowed
    try:
        run_until_stop_signals(engine, interrupted)
        with pytest.raises(Interrupted):
            engine.stop()
    finally:
        signal.signal(signal.SIGUSR1, previous)
        sys.unraisablehook = hook
    engine.stop()
    assert not engine.ref.is_alive()
    deadline = time.monotonic() + WAIT_S
    while (left := [t.name for t in set(threading.enumerate()) - before if t.is_alive()]) \
            and time.monotonic() < deadline:
        threading.Event().wait(0.05)  # threads end on their own once told
    assert left == []
    again = Engine.start(Config.from_dict({"transport": endpoints}))  # the ports are free
    again.stop()
