"""A server socket created, bound, used and closed by one thread of its own.

ZeroMQ sockets are not thread-safe, so each server socket (the publisher's XPUB, the control
server's ROUTER) lives entirely in one thread. `start()` waits for that thread to bind and
re-raises a bind failure (port in use, bad address, plain text on a public address) in the
caller's thread as a `TransportError` naming the endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import zmq

from actors.logs import get_logger
from transport.errors import TransportError
from transport.security import CurveServer, check_bind, uses_ipv6

log = get_logger("tradeloom.transport")


class ServerThread:
    """Base of `Publisher` and `ControlServer`: subclasses implement `_serve(socket)`, which
    returns when `self._stopping` is set, and may override `_wake()` to interrupt a wait."""

    socket_type: int = zmq.PUB
    role = "server"

    def __init__(self, endpoint: str, *, context: zmq.Context[Any] | None = None,
                 curve: CurveServer | None = None, insecure: bool = False,
                 options: Mapping[int, int | bytes] | None = None) -> None:
        self.bind_endpoint = endpoint
        #: The bound address (with the port the OS picked for `tcp://host:*`), after start().
        self.endpoint = endpoint
        self._context = context if context is not None else zmq.Context.instance()
        self._curve = curve
        self._insecure = insecure
        self._options = dict(options or {})
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Bind in the socket's own thread; raise `TransportError` here if that fails."""
        if self._thread is not None:
            raise RuntimeError(f"{self.role} already started")
        check_bind(self.bind_endpoint, curve=self._curve is not None, insecure=self._insecure)
        self._thread = threading.Thread(target=self._main, name=f"tradeloom-{self.role}",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self._stopping.set()
            raise TransportError(f"{self.role} on {self.bind_endpoint} did not bind within "
                                 f"{timeout} s")
        error = self._startup_error
        if error is not None:
            self._thread.join(timeout)
            reason = error.strerror if isinstance(error, zmq.ZMQError) else str(error)
            raise TransportError(f"cannot bind the {self.role} on {self.bind_endpoint}: "
                                 f"{reason}") from error

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to finish; it closes its socket (linger 0). Idempotent."""
        self._stopping.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.error("transport_thread_did_not_stop", role=self.role, timeout_s=timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ServerThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wake(self) -> None:
        """Interrupt the thread's wait so that it sees `_stopping`; default: none needed."""

    def _setup(self, socket: zmq.Socket[Any]) -> None:
        """Socket options before bind (in the socket's thread)."""

    def _serve(self, socket: zmq.Socket[Any]) -> None:
        raise NotImplementedError

    def _cleanup(self) -> None:
        """After the socket is closed (in the socket's thread)."""

    def _main(self) -> None:
        try:
            socket = self._context.socket(self.socket_type)
        except zmq.ZMQError as exc:
            self._startup_error = exc
            self._ready.set()
            return
        try:
            try:
                socket.linger = 0
                socket.ipv6 = uses_ipv6(self.bind_endpoint)
                self._setup(socket)
                for option, value in self._options.items():
                    socket.setsockopt(option, value)
                if self._curve is not None:
                    self._curve.apply(socket)
                socket.bind(self.bind_endpoint)
                last = socket.getsockopt(zmq.LAST_ENDPOINT)
                self.endpoint = last.decode() if isinstance(last, bytes) else str(last)
            except Exception as exc:  # noqa: BLE001 - handed to start() in the caller's thread
                self._startup_error = exc
                return
            finally:
                self._ready.set()
            log.debug("transport_bound", role=self.role, endpoint=self.endpoint)
            try:
                self._serve(socket)
            except Exception:
                log.exception("transport_thread_failed", role=self.role, endpoint=self.endpoint)
        finally:
            socket.close(linger=0)
            self._cleanup()
