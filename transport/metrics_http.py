"""The metrics endpoint's HTTP server: prometheus_client's WSGI app (`make_wsgi_app`) behind
a threading server that bounds what its connections may hold.

prometheus_client's own `start_http_server` starts a thread per connection and never times
one out: every idle TCP connection to the port (a health checker that connects and says
nothing, a scraper that hangs) kept a thread for the life of the daemon. Five hundred of
them were five hundred threads, and a daemon under a task limit (systemd's `TasksMax`, a
container's pids limit) then had none left for its node actors: runs failed because of a
port scan. Here:

- at most MAX_CONNECTIONS connections are served at once; one past it is closed at accept
  (counted in `refused`, logged at most every REFUSED_LOG_S);
- a connection that sends nothing for IDLE_TIMEOUT_S is closed, so its thread ends;
- a connection still open REQUEST_DEADLINE_S after it was accepted is cut, however it
  trickles (a byte every few seconds never lets the idle timeout fire), and every one
  still open is cut when the server closes, so no connection thread outlives it;
- a failed request (a client that hangs up mid-way, a timeout) is logged on one debug
  line, never printed as a traceback (`socketserver`'s default).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from actors.logs import get_logger

log = get_logger("tradeloom.transport.metrics")

#: Connections served at once. Prometheus holds one per target; 32 leaves room for a few
#: scrapers and people with curl.
MAX_CONNECTIONS = 32
#: A connection that sends nothing for this long is closed (a scrape takes ~2 ms).
IDLE_TIMEOUT_S = 10.0
#: A connection still open this long after its accept is cut (a request is read and its
#: reply written in milliseconds; Prometheus gives up on a scrape after 10 s by default).
REQUEST_DEADLINE_S = 30.0
#: At most one `metrics_connection_refused` line this often, with the count since the last.
REFUSED_LOG_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    """Requests are not logged (a scrape every few seconds would fill the log); a silent
    client times out (`StreamRequestHandler.timeout` is set on the socket)."""

    timeout = IDLE_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        pass


class BoundedMetricsServer(ThreadingMixIn, WSGIServer):
    """A thread per connection, at most `max_connections` of them at once."""

    daemon_threads = True
    #: The listen backlog (socketserver's default is 5): a burst of connections is
    #: accepted, and refused past the cap at once, rather than left to the client's
    #: SYN retries (seconds each).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[WSGIRequestHandler], *,
                 max_connections: int = MAX_CONNECTIONS,
                 request_deadline_s: float = REQUEST_DEADLINE_S) -> None:
        self.max_connections = max_connections
        self.request_deadline_s = request_deadline_s
        self._slots = threading.BoundedSemaphore(max_connections)
        #: Connections being served -> when they are cut; a socket leaves it (under the
        #: lock) before it is closed, so one is never shut down after its close.
        self._open: dict[Any, float] = {}
        self._open_lock = threading.Lock()
        #: Connections closed at accept because every slot was taken.
        self.refused = 0
        self._refused_logged = 0
        self._refused_logged_at = -REFUSED_LOG_S
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self._log_refused()
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic() + self.request_deadline_s
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:
            self._slots.release()  # no thread (the OS refused one): the slot is free again
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def service_actions(self) -> None:
        """Between two polls of `serve_forever` (every 0.5 s): cut connections past their
        deadline (their thread's read or write fails, and the thread ends)."""
        now = time.monotonic()
        with self._open_lock:
            for request, deadline in self._open.items():
                if deadline <= now:
                    _cut(request)

    def server_close(self) -> None:
        """Close the listening socket and cut every connection still served."""
        super().server_close()
        with self._open_lock:
            for request in self._open:
                _cut(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics_request_failed", client=str(client_address), exc_info=True)

    def _log_refused(self) -> None:
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSED_LOG_S:
            log.warning("metrics_connection_refused", refused=self.refused - self._refused_logged,
                        max_connections=self.max_connections,
                        note="every connection slot is taken; a scrape may fail until one "
                             "frees (an idle connection is closed after a while)")
            self._refused_logged_at = now
            self._refused_logged = self.refused


def _cut(request: Any) -> None:
    with contextlib.suppress(OSError):  # already shut down, or its client gone
        request.shutdown(socket.SHUT_RDWR)


def bind_metrics_server(host: str, port: int, registry: CollectorRegistry, *,
                        max_connections: int = MAX_CONNECTIONS,
                        idle_timeout_s: float = IDLE_TIMEOUT_S,
                        request_deadline_s: float = REQUEST_DEADLINE_S) -> BoundedMetricsServer:
    """Bind (OSError if the address is taken); serve with `serve_forever()` in a thread."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    class Server(BoundedMetricsServer):
        address_family = family

        def __init__(self, address: tuple[str, int],
                     handler: type[WSGIRequestHandler]) -> None:
            super().__init__(address, handler, max_connections=max_connections,
                             request_deadline_s=request_deadline_s)

    class Handler(_QuietHandler):
        timeout = idle_timeout_s

    server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=Handler)
    assert isinstance(server, BoundedMetricsServer)
    return server
