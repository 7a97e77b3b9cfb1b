"""The one place that touches websockets' server internals.

websockets' threaded server (`websockets.sync.server`) starts a thread for every TCP
connection it accepts, before any handshake, and has no limit of its own: a peer that opens
thousands of idle connections would get thousands of threads. `bound_connections` puts a
limit in front of that thread through two attributes of its `Server`:

- `server.socket`: `serve_forever` waits until it is readable, then calls its `accept()`;
  `shutdown` calls its `close()`. `AdmittingListener` takes its place: its `accept()` closes
  a connection that gets no slot at once (no thread is started for it) and returns only
  one that does.
- `server.handler`: `serve_forever` runs it in the new thread, with the accepted socket; it
  returns once that connection is closed (it closes it). A wrapper gives the slot back.

tests/test_web_handshakes.py fails loudly if an upgrade of websockets changes either.

`serve_forever` stands in for `Server.serve_forever`, whose loop ends for good (the gateway
deaf, the unstarted thread left for `shutdown` to join) when the OS refuses the thread for
a connection (`can't start new thread`); it uses the attributes that method uses.
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from websockets.sync.server import Server

from actors.logs import get_logger
from transport.errors import TransportError

__all__ = ["AdmittingListener", "LiveSockets", "bound_connections", "serve_forever"]

log = get_logger("tradeloom.transport.web")

#: Longest wait in `accept()` before it looks again whether the listener was closed (the
#: close also wakes it at once; this is the backstop).
WAIT_S = 1.0
#: After an accept error other than "nothing pending" (EMFILE, ECONNABORTED...): a pause,
#: then accepting goes on. websockets itself would stop serving on any accept error.
RETRY_S = 0.1
#: The `web_connection_thread_failed` line comes at most this often (seconds), with the
#: count of connections closed for want of a thread since the line before.
THREAD_LOG_EVERY_S = 60.0


class AdmittingListener:
    """The listening socket as `Server.serve_forever` sees it: `accept()` returns the next
    connection that `admit()` lets in and closes every other one as soon as it is accepted.

    The real listener is made non-blocking so that `accept()` never blocks in the kernel:
    when nothing admissible is pending it waits on the listener and on a wake-up socket that
    `close()` writes to (`shutdown` closes the listener from another thread)."""

    def __init__(self, listener: socket.socket, admit: Callable[[], bool]) -> None:
        self._listener = listener
        self._admit = admit
        self._closed = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        listener.setblocking(False)
        self.family = listener.family

    def fileno(self) -> int:
        return self._listener.fileno()

    def getsockname(self) -> Any:
        return self._listener.getsockname()

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            if self._closed.is_set() or self._listener.fileno() == -1:
                self._release()
                raise OSError(errno.EBADF, "the listener is closed")
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                self._selector.select(WAIT_S)
                continue
            except OSError:
                self._closed.wait(RETRY_S)
                continue
            try:
                # Accepted from a non-blocking listener, a socket's mode is the OS's choice;
                # websockets expects a blocking one (it sets its own timeouts).
                sock.setblocking(True)
            except OSError:
                sock.close()
                continue
            if self._admit():
                return sock, address
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def release(self) -> None:
        """`_release`, from the serving thread once it stops accepting (idempotent)."""
        self._release()

    def _release(self) -> None:
        """The wake-up pair and the selector, once `accept()` saw the close (it alone uses
        them after that, so no other thread is waiting on them)."""
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()


class LiveSockets:
    """The sockets of the connections whose threads are running, in any phase: `cut()`
    ends them all at once (a stop must not wait for handshakes that never finish)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.add(sock)

    def discard(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)

    def __len__(self) -> int:
        with self._lock:
            return len(self._socks)

    def cut(self) -> int:
        """Shut every live socket down (its thread's next read or write fails)."""
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        return len(socks)


def bound_connections(server: Server, admit: Callable[[], bool],
                      release: Callable[[], None]) -> LiveSockets:
    """Before `server.serve_forever()` runs: every connection `serve_forever` accepts is
    first offered to `admit()`; refused, it is closed at once (no thread); admitted, its
    `release()` is called when its thread is done with it, whatever happened. Returns the
    live connections' sockets."""
    handler = getattr(server, "handler", None)
    listener = getattr(server, "socket", None)
    if not callable(handler) or not isinstance(listener, socket.socket):
        raise TransportError("websockets' Server no longer has the `handler` and `socket` "
                             "attributes transport/web/_compat.py hooks: adapt it")

    live = LiveSockets()

    def handle_then_release(sock: socket.socket, address: Any) -> None:
        live.add(sock)
        try:
            handler(sock, address)
        finally:
            live.discard(sock)
            release()

    server.handler = handle_then_release
    # Not a socket.socket, but everything serve_forever and shutdown call on one.
    server.socket = cast(socket.socket, AdmittingListener(listener, admit))
    return live


def serve_forever(server: Server, release: Callable[[], None]) -> None:
    """`server.serve_forever()` (after `bound_connections`), except that a connection whose
    thread the OS refuses is closed at once, its slot given back with `release()`, and
    logged (at most once per THREAD_LOG_EVERY_S); serving goes on. Returns once `shutdown`
    closed the listener."""
    poller = selectors.DefaultSelector()
    refused, next_log_at = 0, 0.0
    try:
        try:
            poller.register(server.shutdown_watcher, selectors.EVENT_READ)
            poller.register(server.socket, selectors.EVENT_READ)
        except (OSError, ValueError):
            return  # shutdown ran first
        while True:
            poller.select()
            try:
                sock, address = server.socket.accept()
            except OSError:  # the listener was closed
                break
            thread = threading.Thread(target=server.handler, args=(sock, address))
            with server.lock:  # registered before it starts: shutdown joins it
                server.handler_threads.add(thread)
            try:
                thread.start()
            except RuntimeError as exc:  # can't start new thread
                with server.lock:
                    server.handler_threads.discard(thread)
                refused += 1
                now = time.monotonic()
                if now >= next_log_at:
                    next_log_at = now + THREAD_LOG_EVERY_S
                    log.error("web_connection_thread_failed", error=str(exc), closed=refused)
                    refused = 0
                with contextlib.suppress(OSError):
                    sock.close()
                release()
    finally:
        server.socket_closed.set()
        server.shutdown_watcher.close()
        poller.close()
        listener = server.socket
        if isinstance(listener, AdmittingListener):
            # Also when a stop right after the start came first and accept() never saw
            # the close (its wake-up pair leaked: a ResourceWarning).
            listener.release()
