"""The HTTP client of one webhook endpoint, with the SSRF guard at connect time.

httpx resolves nothing itself: its transport hands (host, port) to an httpcore network
backend, which resolves and connects. `GuardedBackend` is that backend: it resolves the
host once, refuses the private, loopback, link-local and otherwise non-public addresses
(unless the endpoint has `allow_private = true`), and connects to an address it checked.
So a DNS answer that changes between a check and the connection (rebinding) cannot get
through: there is no second lookup. TLS still verifies the URL's host name (httpcore
passes it as server_hostname, whatever address we connected to).

This is the one module that reaches into httpx (its transport's `_pool`, see
`make_client`); the SSRF tests fail if an upgrade moves it. The client follows no
redirects (a 3xx is a final failure of that delivery) and ignores proxy environment
variables (a proxy would connect on our behalf, past the guard).

The lookup counts against `timeout_s` too: getaddrinfo cannot be cancelled, so it runs in
a thread of its own (`BoundedLookup`) and an attempt that waited `timeout_s` for it fails
as a connect timeout (retried, then the breaker) while the lookup goes on. A later attempt
waits on that same lookup rather than starting another: a resolver that hangs holds one
thread per endpoint, not one per attempt.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any

import httpcore
import httpx

from actors.errors import WebhookAddressRefused
from actors.logs import get_logger
from actors.throttled_log import ThrottledWarning

log = get_logger("tradeloom.webhooks")

#: `webhook_connection_desynced` is logged the first time, then at most this often per
#: endpoint, with how many connections were closed since the last line.
DESYNCED_WARN_EVERY_S = 10.0

Resolver = Callable[[str, int], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (getaddrinfo), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in seen:
            seen.append(address)
    return seen


class BoundedLookup:
    """Runs a `Resolver` in a daemon thread and waits for it at most a given time."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self._lock = threading.Lock()
        #: The lookup in flight (or last done) and the (host, port) it is for.
        self._pending: tuple[tuple[str, int], Future[list[str]]] | None = None

    def __call__(self, host: str, port: int, timeout: float) -> list[str]:
        """The addresses of `host`; TimeoutError when not known within `timeout`."""
        with self._lock:
            pending = self._pending
            if pending is None or pending[0] != (host, port) or pending[1].done():
                future: Future[list[str]] = Future()
                threading.Thread(target=self._run, args=(future, host, port), daemon=True,
                                 name=f"tradeloom-webhook-lookup-{host}").start()
                pending = self._pending = ((host, port), future)
        return pending[1].result(timeout)

    def _run(self, future: Future[list[str]], host: str, port: int) -> None:
        try:
            future.set_result(self.resolver(host, port))
        except Exception as exc:  # noqa: BLE001 - raised in the attempt waiting on it
            future.set_exception(exc)


def is_public(address: IPAddress) -> bool:
    """Reachable on the public internet: not private, loopback, link-local, multicast,
    reserved or unspecified (an IPv4-mapped IPv6 address is judged as its IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not (address.is_private or address.is_loopback or address.is_link_local
                or address.is_multicast or address.is_reserved or address.is_unspecified
                or not address.is_global)


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync network backend, resolving and checking before it connects."""

    def __init__(self, *, allow_private: bool, resolver: Resolver = system_resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self._lookup = BoundedLookup(resolver)
        self._connect = httpcore.SyncBackend().connect_tcp
        #: The attempt in flight must be over by this `time.monotonic()` (set per request by
        #: `AttemptDeadline`): httpx's timeouts are per read, so a server that trickles a
        #: byte a second would otherwise hold the attempt (and the deliverer) for ever.
        self.deadline = float("inf")
        self.timeout_s = 0.0

    def bound(self, timeout: float | None, error: type[Exception]) -> float:
        """`timeout` cut to what is left of the attempt; `error` when nothing is left."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error(f"the attempt took more than timeout_s ({self.timeout_s:g} s)")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        try:
            addresses = self._lookup(host, port, self.bound(timeout, httpcore.ConnectTimeout))
        except TimeoutError as exc:  # the lookup goes on in its thread; this attempt ends
            raise httpcore.ConnectTimeout(
                f"resolving {host!r} took more than timeout_s ({self.timeout_s:g} s)") from exc
        except (OSError, UnicodeError) as exc:  # UnicodeError: a label empty or too long
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from exc
        allowed = [a for a in addresses
                   if self.allow_private or is_public(ipaddress.ip_address(a))]
        if not allowed:
            raise WebhookAddressRefused(
                f"{host!r} resolves to {', '.join(addresses) or 'nothing'}: not a public "
                "address (set allow_private = true for an endpoint on a private network)")
        last: httpcore.ConnectError | None = None
        for address in allowed:  # httpcore's own backend, to an address checked above
            try:
                stream = self._connect(address, port,
                                       self.bound(timeout, httpcore.ConnectTimeout),
                                       local_address, socket_options)
                return DeadlineStream(stream, self)
            except httpcore.ConnectError as exc:
                last = exc
        raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {last}") from last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise WebhookAddressRefused("webhooks connect over TCP only")


class DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by its backend's attempt deadline."""

    def __init__(self, stream: httpcore.NetworkStream, backend: GuardedBackend) -> None:
        self._stream = stream
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._backend.bound(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._backend.bound(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname,
                                     self._backend.bound(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(tls, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class AttemptDeadline(httpx.BaseTransport):
    """Starts each request's deadline (`timeout_s` from now) on the backend's streams."""

    def __init__(self, transport: httpx.HTTPTransport, backend: GuardedBackend,
                 timeout_s: float, name: str) -> None:
        self._transport = transport
        self._backend = backend
        backend.timeout_s = timeout_s
        # A receiver that answers every request twice would otherwise log a line per event.
        self._desynced = ThrottledWarning(
            log, "webhook_connection_desynced", every_s=DESYNCED_WARN_EVERY_S,
            monotonic=time.monotonic, since_key="desynced_since_last_line",
            total_key="desynced_total", webhook=name,
            note="the receiver sent more than one answer to a request; the connection "
                 "is closed")

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._backend.deadline = time.monotonic() + self._backend.timeout_s
        closed = _close_desynced(self._transport)
        if closed:
            self._desynced.add(closed)
        else:
            self._desynced.flush()
        return self._transport.handle_request(request)

    def close(self) -> None:
        self._desynced.flush(now=True)  # what the throttle held back, told at the stop
        self._transport.close()


def _close_desynced(transport: httpx.HTTPTransport) -> int:
    """Close a kept-alive connection that holds bytes its last response did not account
    for (a receiver that answered one request twice, or a proxy that broke the framing):
    httpcore's reuse check looks at the socket only, so the next request read that stale
    answer as its own, and an event the receiver refused with a 500 was logged delivered.
    Reads httpcore's and h11's internals (the pool this module builds, each connection's
    h11 state): tests/test_webhooks_probe.py guards them. Returns how many it closed."""
    closed = 0
    for connection in transport._pool.connections:
        h11_state = getattr(getattr(connection, "_connection", None), "_h11_state", None)
        if h11_state is not None and h11_state.trailing_data[0]:
            connection.close()
            closed += 1
    return closed


def make_client(*, timeout_s: float, allow_private: bool,
                resolver: Resolver = system_resolver, name: str = "") -> httpx.Client:
    """An httpx.Client for one endpoint: connection reuse, `timeout_s` for a whole attempt
    (connect to the last byte read), the guard at connect time, no redirects, no proxies
    from the environment."""
    transport = httpx.HTTPTransport(trust_env=False)
    # httpx builds its httpcore pool without a way to pass a network backend: replace the
    # pool with one like it that has ours (the same options HTTPTransport gives it).
    backend = GuardedBackend(allow_private=allow_private, resolver=resolver)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        max_connections=1, max_keepalive_connections=1, keepalive_expiry=30.0,
        network_backend=backend)
    return httpx.Client(transport=AttemptDeadline(transport, backend, timeout_s, name),
                        timeout=httpx.Timeout(timeout_s),
                        follow_redirects=False, trust_env=False)
