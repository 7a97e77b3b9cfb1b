"""The WebSocket gateway: `[web] listen` serves the dashboard and its live stream.

    gateway = WebGateway(config.web, engine, warn_at=config.emergency.warn_at)
    gateway.start()    # bound (or raises TransportError / ConfigError), serving in a thread
    gateway.url        # "http://127.0.0.1:8450/"
    gateway.stop()     # closes every connection and the listener

One listener, websockets' threaded server (a thread per connection): `GET /ws` with an
Upgrade is the WebSocket (`transport.web.session`); any other `GET` is answered from the
static files in transport/web/static/ over plain HTTP (`process_request`), so the page needs
nothing but this process: no build step, no CDN. With `certfile`/`keyfile` it is TLS
(https:// and wss://) through an `ssl.SSLContext`.

Security: the token (see `transport.web.auth`) is required in the first message of every
WebSocket; the `Origin` of a WebSocket handshake must be allowed (else 403); static files
are public (they hold no data) and are sent with a strict Content-Security-Policy.

Bounds: at most `max_clients + slots.SLACK` connections are held in any phase (accepted,
in a handshake, waiting for the hello, or open); one accepted past that is closed at once,
before websockets starts its thread (`transport.web.slots`, `transport.web._compat`). A
connection that does not finish its HTTP upgrade within `open_timeout_s`, or sends no hello
within `hello_timeout_s` after it, is closed.
"""

from __future__ import annotations

import http
import importlib.resources
import logging
import mimetypes
import socket
import ssl
import threading
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from actors.engine import Engine
from actors.errors import ConfigError
from actors.logs import get_logger
from actors.version import VERSION
from actors.web_config import WebConfig
from transport.errors import TransportError
from transport.web._compat import LiveSockets, bound_connections, serve_forever
from transport.web.actions import WebActions
from transport.web.auth import default_origins, origin_allowed, resolve_token
from transport.web.refusals import RefusalLog, shown
from transport.web.session import (
    DEFAULT_MAX_LAG,
    HELLO_S,
    SEND_TIMEOUT_S,
    WATCH_S,
    ClientSession,
)
from transport.web.slots import SLACK, ConnectionSlots

log = get_logger("tradeloom.transport.web")

#: The WebSocket's path; every other path is a static file (or 404).
WS_PATH = "/ws"
STATIC_PACKAGE = "transport.web"
#: Seconds `stop()` gives the connections' close handshakes before it cuts them.
CLOSE_S = 3.0
#: Seconds from TCP accept to the end of the HTTP upgrade (the TLS handshake included).
OPEN_TIMEOUT_S = 10.0
#: The page may talk only to this listener and load only its own files.
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; connect-src 'self' ws: wss:; "
                                "img-src 'self' data:; frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)


class WebGateway:
    """The `[web]` listener. `start()` binds; `stop()` ends every session."""

    def __init__(self, config: WebConfig, engine: Engine, *, warn_at: float = 0.8,
                 max_lag: int = DEFAULT_MAX_LAG, send_timeout_s: float = SEND_TIMEOUT_S,
                 open_timeout_s: float = OPEN_TIMEOUT_S, hello_timeout_s: float = HELLO_S,
                 epoch: str = "",
                 env: dict[str, str] | None = None) -> None:
        if config.listen is None:
            raise ValueError("[web] listen is not set: no gateway to start")
        self.config = config
        self._engine = engine
        self._warn_at = warn_at
        self.max_lag = max_lag
        self.send_timeout_s = send_timeout_s
        self.open_timeout_s = open_timeout_s
        self.hello_timeout_s = hello_timeout_s
        #: Every connection held, from accept to close (see `transport.web.slots`).
        self.connection_slots = ConnectionSlots(config.max_clients + SLACK)
        #: The live connections' sockets (set at start), cut if a stop is slow.
        self.live_sockets = LiveSockets()
        self._epoch = epoch
        self.token, self.token_generated = resolve_token(config, env)
        self._actions = WebActions(engine, warn_at=warn_at)
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._sessions: set[ClientSession] = set()
        self._lock = threading.Lock()
        #: Refused handshakes and hellos, logged short and at most once a minute each.
        self.refusals = RefusalLog()
        self.host, self.port = config.host_port()
        self.allowed_origins: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1).rstrip("/") + WS_PATH

    def sessions(self) -> list[ClientSession]:
        with self._lock:
            return list(self._sessions)

    def start(self) -> None:
        tls = self._ssl_context()
        try:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family)
        except OSError as exc:
            raise TransportError(f"web.listen {self.config.listen}: cannot bind: "
                                 f"{exc.strerror or exc}") from None
        self.port = sock.getsockname()[1]
        self.allowed_origins = self.config.allowed_origins or default_origins(
            self.host, self.port, tls=tls is not None)
        self._server = serve(self._handle, sock=sock, ssl=tls,
                             process_request=self._process_request, compression=None,
                             server_header=f"tradeloom/{VERSION}",
                             open_timeout=self.open_timeout_s, close_timeout=2,
                             max_size=64 * 1024, logger=_quiet_logger())
        self.live_sockets = bound_connections(self._server, self.connection_slots.take,
                                              self.connection_slots.give_back)
        self._thread = threading.Thread(target=serve_forever, name="tradeloom-web",
                                        args=(self._server, self.connection_slots.give_back),
                                        daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch_stalls,
                                          name="tradeloom-web-watchdog", daemon=True)
        self._watchdog.start()
        if self.token_generated:
            # Printed once, on stderr with the other start-up lines: the operator pastes it
            # into the page (or opens the URL with #token=...). Never logged again.
            log.warning("web_token_generated", token=self.token, url=self.url,
                        hint=f"set {self.config.token_env} to choose it")
        log.info("web_gateway_started", url=self.url, tls=tls is not None,
                 allowed_origins=list(self.allowed_origins))

    def _watch_stalls(self) -> None:
        """Cut every session whose socket has taken nothing for `send_timeout_s` (a send
        still waiting), whichever thread's send it is: a reply blocks the connection's own
        thread, so the session cannot watch for that itself (a client that asked for big
        replies and read nothing held its slot, and with 16 the dashboard, for ever)."""
        while not self._stopping.wait(WATCH_S):
            try:
                for session in self.sessions():
                    session.cut_if_stalled()
                self.refusals.flush()  # what a minute held back, once it is up
            except Exception:  # the watch must go on
                log.exception("web_watchdog_failed")

    def stop(self) -> None:
        self._stopping.set()
        server = self._server
        if server is not None:
            # A client that reads nothing has a send blocked in the socket; its close frame
            # would wait behind it (forever): cut those first.
            for session in self.sessions():
                if session.stalled_s() > 0.0:
                    session.abort()
            # Closes the listener, then every connection (1001 going away: the page
            # reconnects and resumes), and waits for their threads (close_timeout bounds it
            # once a close frame is out). A send that blocked since the cut above would hold
            # it: past CLOSE_S every connection left is cut too.
            closer = threading.Thread(target=server.shutdown, name="tradeloom-web-closer",
                                      kwargs={"reason": "daemon stopping"}, daemon=True)
            closer.start()
            closer.join(CLOSE_S)
            if closer.is_alive():
                for session in self.sessions():
                    session.abort()
                # Connections still in their handshakes have no session: their threads
                # would wait out open_timeout_s.
                self.live_sockets.cut()
                closer.join(CLOSE_S)
        if self._thread is not None:
            self._thread.join(5.0)
        if self._watchdog is not None:
            self._watchdog.join(5.0)
        self.refusals.flush(now=True)

    # -- the listener's callbacks (its threads) ---------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(str(self.config.certfile), str(self.config.keyfile))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"web.certfile/web.keyfile: cannot load: {exc}") from None
        return context

    def _process_request(self, connection: ServerConnection,
                         request: Request) -> Response | None:
        if request.method != "GET":  # HEAD would get a body, POST a page: neither is served
            response = connection.respond(http.HTTPStatus.METHOD_NOT_ALLOWED,
                                          "only GET is served\n")
            response.headers["Allow"] = "GET"
            return response
        path = request.path.split("?", 1)[0]
        if path == WS_PATH:
            # Two Origin headers (no browser sends that) are refused, not a 500 with a
            # traceback: Headers.get raises MultipleValuesError for them.
            origins = request.headers.get_all("Origin")
            origin = origins[0] if len(origins) == 1 else None
            if len(origins) > 1 or not origin_allowed(origin, self.allowed_origins):
                self.refusals.refused("web_origin_refused", origin=shown(origins[0]) if origins
                                      else None, origin_headers=len(origins))
                return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
            with self._lock:
                full = len(self._sessions) >= self.config.max_clients
            if full:
                self.refusals.refused("web_clients_full", max_clients=self.config.max_clients)
                return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                          "too many clients ([web] max_clients)\n")
            return None  # the WebSocket handshake goes on
        return self._static(connection, path)

    def _static(self, connection: ServerConnection, path: str) -> Response:
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        body = _static_file(name)
        if body is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found\n")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        headers = Headers([("Content-Type", f"{kind}; charset=utf-8"),
                           ("Content-Length", str(len(body))), *SECURITY_HEADERS])
        return Response(200, "OK", headers, body)

    def _handle(self, connection: ServerConnection) -> None:
        session = ClientSession(connection, self._engine, token=self.token,
                                actions=self._actions, info=self._info,
                                refusals=self.refusals,
                                stopping=self._stopping, max_lag=self.max_lag,
                                send_timeout_s=self.send_timeout_s,
                                hello_timeout_s=self.hello_timeout_s)
        with self._lock:
            self._sessions.add(session)
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.discard(session)

    def _info(self) -> dict[str, Any]:
        return {"version": VERSION, "epoch": self._epoch, "state": self._engine.state.value,
                "warn_at": self._warn_at}


_STATIC_NAMES = frozenset({"index.html", "app.js", "app.css"})


def _static_file(name: str) -> bytes | None:
    """A file of transport/web/static/ by its plain name (no directories: no traversal)."""
    if name not in _STATIC_NAMES:
        return None
    resource = importlib.resources.files(STATIC_PACKAGE).joinpath("static", name)
    try:
        return resource.read_bytes()
    except OSError:
        return None


def _quiet_logger() -> Any:
    """websockets' own logger, but without its INFO lines (every static GET would log one)
    and without the one error any peer can provoke (`_PipelinedRequestFilter`); our own
    structlog lines say what matters."""
    logger = logging.getLogger("websockets.server")
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, _PipelinedRequestFilter) for f in logger.filters):
        logger.addFilter(_PipelinedRequestFilter())
    return logger


class _PipelinedRequestFilter(logging.Filter):
    """Drops websockets' "unexpected internal error" for an AssertionError: a client that
    sends a second HTTP request behind the first, unasked (browsers do not), makes
    websockets 17 read it as frames and, at times, assert on its own state (an error with a
    traceback in our log that any peer could provoke). That connection is closed; nothing
    else is affected."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.getMessage() == "unexpected internal error"
                    and isinstance(exc, AssertionError))
