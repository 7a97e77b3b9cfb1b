"""The metrics endpoint's HTTP server holds a bounded number of connections: an idle one is
closed after its timeout (its thread ends), one past the cap is closed at accept, and the
daemon's thread count stays bounded however many connections a client leaves open."""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from actors import Config
from tests.engine_journal_helpers import eventually
from transport.daemon import Daemon
from transport.metrics_http import MAX_CONNECTIONS, BoundedMetricsServer, bind_metrics_server

LOCAL = "tcp://127.0.0.1:*"


@contextlib.contextmanager
def serving(**options: Any) -> Iterator[BoundedMetricsServer]:
    registry = CollectorRegistry(auto_describe=False)
    Counter("probe", "A counter the scrape must show", registry=registry).inc()
    server = bind_metrics_server("127.0.0.1", 0, registry, **options)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def connect(port: int) -> socket.socket:
    """A client that connects and says nothing."""
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes `sock` within `within` seconds."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text: str = response.read().decode()
    return text


def serving_threads() -> int:
    """The server's per-connection threads (socketserver names them after their target)."""
    return sum(1 for t in threading.enumerate() if "process_request_thread" in t.name)


def test_an_idle_connection_is_closed_after_the_idle_timeout_and_its_thread_ends() -> None:
    with serving(idle_timeout_s=0.5) as server:
        port = server.server_port
        clients = [connect(port) for _ in range(5)]
        try:
            eventually(lambda: serving_threads() == 5 or server.refused > 0)
            assert server.refused == 0
            for client in clients:
                assert closed_by_server(client, 10)
            eventually(lambda: serving_threads() == 0)
            assert "probe_total 1.0" in scrape(port)
        finally:
            for client in clients:
                client.close()


def test_a_connection_past_the_cap_is_closed_at_accept_and_a_freed_slot_serves_again() -> None:
    with serving(max_connections=3, idle_timeout_s=60) as server:
        port = server.server_port
        clients = [connect(port) for _ in range(3)]
        try:
            eventually(lambda: serving_threads() == 3)
            extra = connect(port)
            clients.append(extra)
            assert closed_by_server(extra, 10)
            assert server.refused == 1 and serving_threads() == 3
            clients[0].close()  # a slot frees when its client leaves
            eventually(lambda: serving_threads() == 2)
            assert "probe_total 1.0" in scrape(port)
            assert server.refused == 1
        finally:
            for client in clients:
                client.close()


def test_a_daemon_left_with_hundreds_of_idle_metrics_connections_keeps_its_threads_bounded(
        tmp_path: Path) -> None:
    daemon = Daemon(Config.from_dict({
        "daemon": {"data_dir": str(tmp_path / "data"), "shutdown_grace_s": 1.0},
        "transport": {"events": LOCAL, "control": LOCAL, "heartbeat_s": 0.5},
        "metrics": {"listen": "127.0.0.1:0"}}))
    daemon.start()
    clients: list[socket.socket] = []
    try:
        assert daemon.metrics is not None
        port = daemon.metrics.port
        before = threading.active_count()
        clients = [connect(port) for _ in range(300)]
        eventually(lambda: serving_threads() == MAX_CONNECTIONS)
        refused = sum(closed_by_server(client, 10) for client in clients[MAX_CONNECTIONS:])
        assert refused == 300 - MAX_CONNECTIONS
        assert threading.active_count() <= before + MAX_CONNECTIONS
        for client in clients:
            client.close()
        eventually(lambda: serving_threads() == 0)
        assert "tradeloom_events_last_seq" in scrape(port)
    finally:
        for client in clients:
            client.close()
        daemon.stop()


def test_a_connection_that_trickles_its_request_is_cut_at_its_deadline() -> None:
    """A byte now and then resets the idle timeout: without a deadline of its own such a
    client held its slot (and thread) for as long as it liked, and MAX_CONNECTIONS of them
    shut every scrape out."""
    with serving(max_connections=1, idle_timeout_s=0.5, request_deadline_s=1.0) as server:
        client = connect(server.server_port)
        cut = threading.Event()

        def trickle() -> None:
            pause = threading.Event()
            try:
                client.sendall(b"GET /metrics HTTP/1.1\r\n")
                while not cut.is_set():
                    client.sendall(b"X-Slow: 1\r\n")
                    pause.wait(0.1)
            except OSError:
                cut.set()

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            eventually(lambda: serving_threads() == 1 or cut.is_set(), 10,
                       "the trickling connection served")
            eventually(lambda: cut.is_set() and serving_threads() == 0, 10,
                       "the trickling connection cut")
            assert server.refused == 0
            assert "probe_total 1.0" in scrape(server.server_port)
        finally:
            cut.set()
            client.close()
            trickler.join(10)


def test_closing_the_server_cuts_the_connections_it_serves() -> None:
    registry = CollectorRegistry(auto_describe=False)
    server = bind_metrics_server("127.0.0.1", 0, registry, idle_timeout_s=60)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clients = [connect(server.server_port) for _ in range(3)]
    try:
        eventually(lambda: serving_threads() == 3)
        server.shutdown()
        server.server_close()
        thread.join(10)
        for client in clients:
            assert closed_by_server(client, 5)
        eventually(lambda: serving_threads() == 0, 5, "connection threads ended with the server")
    finally:
        for client in clients:
            client.close()
