"""The gateway's bound on connections in every phase (transport/web/slots.py and
_compat.py): idle TCP connections past `max_clients + SLACK` are closed on accept, without
a thread; a connection that never authenticates is closed after a bounded time; and the
websockets internals the bound hooks into are still there.
"""

from __future__ import annotations

import inspect
import json
import re
import select
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect
from websockets.sync.server import Server

from actors import Engine
from tests.engine_journal_helpers import captured_logs as capture_logs
from transport.errors import TransportError
from transport.web import _compat
from transport.web._compat import AdmittingListener, bound_connections
from transport.web.session import CLOSE_BAD_HELLO
from transport.web.slots import SLACK, ConnectionSlots

from .test_web_gateway import DEADLINE_S, engine, hello, start_gateway, wait_until

__all__ = ["engine"]  # the fixture, imported for pytest

#: Connections opened beyond the slots.
EXCESS = 20


def test_idle_connections_past_the_slots_are_closed_on_accept_without_a_thread(
        engine: Engine) -> None:
    gateway = start_gateway(engine, max_clients=2)
    limit = gateway.connection_slots.limit
    assert limit == 2 + SLACK
    threads_before = threading.active_count()
    sockets: list[socket.socket] = []
    try:
        with capture_logs() as logs:
            for _ in range(limit + EXCESS):  # connected, and never a byte sent
                sockets.append(socket.create_connection(("127.0.0.1", gateway.port),
                                                        timeout=DEADLINE_S))
            assert wait_until(lambda: gateway.connection_slots.refused == EXCESS)
            held, excess = sockets[:limit], sockets[limit:]  # accepted in connect order
            for sock in excess:
                assert sock.recv(1) == b""  # closed by the server
            assert gateway.connection_slots.held == limit
            # websockets runs two threads per connection in its handshake: only the held
            # ones have them (without the bound, every one of the 38 would).
            assert threading.active_count() - threads_before <= 2 * limit + 2
            assert select.select(held, [], [], 0)[0] == []  # still open, waiting
            # While they hold every slot, a real client is turned away too ...
            with pytest.raises((InvalidHandshake, ConnectionClosed, OSError)):
                connect(gateway.ws_url, open_timeout=DEADLINE_S)
        full = [line for line in logs if line["event"] == "web_connections_full"]
        assert [(line["refused"], line["limit"]) for line in full] == [(1, limit)]  # once
        for sock in held:
            sock.close()
        # ... and gets in once they are gone.
        assert wait_until(lambda: gateway.connection_slots.held == 0)
        with connect(gateway.ws_url, open_timeout=DEADLINE_S) as ws:
            assert hello(ws)["msg"] == "welcome"
        assert wait_until(lambda: threading.active_count() <= threads_before)
    finally:
        for sock in sockets:
            sock.close()
        gateway.stop()


def test_a_connection_that_never_authenticates_is_closed_and_gives_its_slot_back(
        engine: Engine) -> None:
    gateway = start_gateway(engine, open_timeout_s=0.5, hello_timeout_s=0.5)
    try:
        # No HTTP request at all: closed once the opening handshake's time is up (the
        # socket's timeout is shorter than the default's 10 s, and long for a 0.5 s one).
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=8.0) as idle:
            started = time.monotonic()
            assert idle.recv(1) == b""
            assert time.monotonic() - started >= 0.4
        # Upgraded, but no hello with the token: told so, then closed.
        with connect(gateway.ws_url, open_timeout=DEADLINE_S) as ws:
            message = json.loads(ws.recv(timeout=4.0))  # the default is 5 s
            assert message["error"]["code"] == "bad_request"
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=DEADLINE_S)
            assert ws.close_code == CLOSE_BAD_HELLO
        assert wait_until(lambda: gateway.connection_slots.held == 0)
    finally:
        gateway.stop()


def test_refusals_are_logged_at_most_once_a_minute_with_their_count() -> None:
    clock = [0.0]
    slots = ConnectionSlots(1, now=lambda: clock[0])
    with capture_logs() as logs:
        assert slots.take()
        for _ in range(5):
            assert not slots.take()  # the first is logged, the other four counted
        clock[0] = 59.9
        assert not slots.take()
        clock[0] = 60.0
        assert not slots.take()  # a minute on: the six since the first line
        slots.give_back()
        assert slots.take()
    assert [(line["refused"], line["refused_total"], line["held"])
            for line in logs if line["event"] == "web_connections_full"] == [(1, 1, 1),
                                                                              (6, 7, 1)]
    assert (slots.held, slots.refused) == (1, 7)


def test_close_wakes_an_accept_waiting_for_an_admissible_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compat, "WAIT_S", 600.0)  # only the wake-up can end the wait
    listener = AdmittingListener(socket.create_server(("127.0.0.1", 0)), lambda: False)
    outcome: list[BaseException] = []

    def accept() -> None:
        try:
            listener.accept()
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname(), timeout=DEADLINE_S) as refused:
        assert refused.recv(1) == b""  # refused: accept() is now waiting for another
    listener.close()
    thread.join(DEADLINE_S)
    assert not thread.is_alive() and len(outcome) == 1


def test_websockets_server_internals_we_hook_are_unchanged() -> None:
    """If this fails after a websockets upgrade, adapt transport/web/_compat.py."""
    serve_forever = inspect.getsource(Server.serve_forever)
    assert "self.socket.accept()" in serve_forever
    assert re.search(r"threading\.Thread\(target=self\.handler, args=\(sock, addr\)\)",
                     serve_forever)
    assert "self.socket.close()" in inspect.getsource(Server.shutdown)
    # What our stand-in for serve_forever (transport/web/_compat.py) shares with it.
    for used in ("self.handler_threads.add(thread)", "with self.lock:",
                 "self.socket_closed.set()", "self.shutdown_watcher.close()",
                 "poller.register(self.shutdown_watcher, selectors.EVENT_READ)"):
        assert used in serve_forever, used
    # Nothing else is asked of the listener than AdmittingListener offers.
    whole = inspect.getsource(Server)
    assert set(re.findall(r"self\.socket\.(\w+)", whole)) <= {"accept", "close", "fileno"}
    passed = set(re.findall(r"(\w+(?:\.\w+)?)\(self\.socket\b", whole))
    assert passed <= {"get_socket_name", "poller.register"}, passed
    from websockets import utils
    assert set(re.findall(r"sock\.(\w+)", inspect.getsource(utils.get_socket_name))) <= {
        "family", "getsockname"}
    signature = inspect.signature(Server.__init__)
    assert list(signature.parameters)[1:3] == ["sock", "handler"]


def test_bound_connections_refuses_a_server_without_the_hooks() -> None:
    class NotAServer:
        handler = None

    with pytest.raises(TransportError, match="_compat"):
        bound_connections(NotAServer(), lambda: True, lambda: None)  # type: ignore[arg-type]


def test_a_stop_ends_connections_stuck_in_their_handshakes(engine: Engine) -> None:
    # Long timeouts: only the stop may end these connections.
    gateway = start_gateway(engine, open_timeout_s=60.0, hello_timeout_s=60.0)
    threads_before = threading.active_count()
    sockets = [socket.create_connection(("127.0.0.1", gateway.port), timeout=DEADLINE_S)
               for _ in range(3)]  # connected, and never a byte sent
    try:
        assert wait_until(lambda: len(gateway.live_sockets) == 3)
        gateway.stop()
        for sock in sockets:
            assert sock.recv(1) == b""  # cut by the stop, not by a timeout
        assert wait_until(lambda: len(gateway.live_sockets) == 0)
        assert wait_until(lambda: threading.active_count() <= threads_before - 1)
    finally:
        for sock in sockets:
            sock.close()
