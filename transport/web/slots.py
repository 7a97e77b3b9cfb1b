"""The gateway's connection slots: a bound on every connection it holds, in any phase.

`[web] max_clients` bounds the WebSocket clients past their hello (a handshake past it is
answered 503), but each TCP connection holds threads from the moment it is accepted: during
the TLS handshake, the HTTP request (a static file or the upgrade), and the wait for the
hello with the token. `ConnectionSlots` counts them all, from accept to close; a connection
accepted when every slot is taken is closed at once (see `transport.web._compat`), counted,
and logged as `web_connections_full` at most once per `LOG_EVERY_S`. How long a connection
may hold a slot without authenticating is bounded by the gateway's `open_timeout_s` (TCP
accepted to upgrade done) plus its `hello_timeout_s` (upgrade done to hello).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from actors.logs import get_logger

log = get_logger("tradeloom.transport.web")

#: Slots beyond `[web] max_clients`: room for connections still in their handshakes (or
#: fetching the page's files, or about to be answered 503) next to a full set of clients.
SLACK = 16
#: The `web_connections_full` line comes at most this often (seconds), with the count of
#: connections refused since the line before.
LOG_EVERY_S = 60.0


class ConnectionSlots:
    """`take()` when a connection is accepted (False: full, close it); `give_back()` once
    it is closed. Thread-safe: the listener's thread takes, connection threads give back."""

    def __init__(self, limit: int, *, log_every_s: float = LOG_EVERY_S,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._log_every_s = log_every_s
        self._now = now
        self._lock = threading.Lock()
        self._held = 0
        self._refused = 0
        self._refused_unlogged = 0
        self._next_log_at: float | None = None

    @property
    def held(self) -> int:
        """Connections holding a slot now (accepted and not closed yet)."""
        with self._lock:
            return self._held

    @property
    def refused(self) -> int:
        """Connections closed on accept since start, every slot taken."""
        with self._lock:
            return self._refused

    def take(self) -> bool:
        with self._lock:
            if self._held < self.limit:
                self._held += 1
                return True
            self._refused += 1
            self._refused_unlogged += 1
            now = self._now()
            if self._next_log_at is not None and now < self._next_log_at:
                return False
            self._next_log_at = now + self._log_every_s
            refused, self._refused_unlogged = self._refused_unlogged, 0
            held, total = self._held, self._refused
        log.warning("web_connections_full", refused=refused, refused_total=total, held=held,
                    limit=self.limit)
        return False

    def give_back(self) -> None:
        with self._lock:
            self._held -= 1
