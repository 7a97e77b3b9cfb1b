"""Webhooks against endpoints that misbehave on purpose (raw sockets on 127.0.0.1: a slow
loris, a huge body, a cut connection, garbage HTTP, a redirect to a private address), odd
Retry-After values, odd URLs in the config, and events holding values JSON has no form for.
The deliverer must end each attempt within `timeout_s`, never hold a huge body, send only
strict JSON, and keep running whatever an endpoint or an event does.
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.errors import ConfigError
from actors.webhook_config import WebhookConfig, WebhookSecrets, parse_webhooks
from actors.webhook_delivery import Outcome, Sender, body_of, retry_after_s
from actors.webhook_transport import Resolver, make_client, system_resolver
from tests.engine_journal_helpers import captured_logs
from tests.test_webhooks import SECRET, WebhooksFactory, hook, wait_log, webhooks
from tests.webhook_server import EndpointServer

__all__ = ["webhooks"]  # the fixture, re-used

DEADLINE_S = 20.0
Behaviour = Callable[[socket.socket], None]


class RawEndpoint:
    """A TCP server on 127.0.0.1 that runs `behaviour(conn)` for every connection."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(DEADLINE_S)
            try:
                read_request(conn)
                self.behaviour(conn)
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.listener.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError("client went away")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += conn.recv(65536)
    return body


@pytest.fixture
def raw() -> Iterator[Callable[[Behaviour], RawEndpoint]]:
    servers: list[RawEndpoint] = []

    def start(behaviour: Behaviour) -> RawEndpoint:
        servers.append(RawEndpoint(behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def sender_for(url: str, *, timeout_s: float = 0.5, max_attempts: int = 1,
               resolver: Resolver = system_resolver,
               sleep: Callable[[float], None] = lambda _s: None) -> Sender:
    config = WebhookConfig(name="probe", url=url, secret=SECRET, timeout_s=timeout_s,
                           max_attempts=max_attempts, backoff_initial_s=0.01,
                           backoff_max_s=0.05, allow_private=True)
    client = make_client(timeout_s=timeout_s, allow_private=True, resolver=resolver,
                         name=config.name)
    return Sender(config, WebhookSecrets(SECRET.encode()), client, sleep=sleep)


def deliver_within(sender: Sender, seconds: float) -> Outcome:
    """One delivery in a thread; it must be over within `seconds`."""
    result: list[Outcome] = []
    worker = threading.Thread(target=lambda: result.append(
        sender.deliver([{"v": 1, "type": "t", "seq": 1}])), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the delivery took more than {seconds} s"
    sender.client.close()
    return result[0]


def test_a_slow_loris_is_bounded_by_timeout_s(
        raw: Callable[[Behaviour], RawEndpoint]) -> None:
    def trickle(conn: socket.socket) -> None:  # a header line every 0.1 s, for ever
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not server.stop.wait(0.1):
            conn.sendall(b"X-Slow: 1\r\n")

    server = raw(trickle)
    started = time.monotonic()
    outcome = deliver_within(sender_for(server.url, timeout_s=0.5), 5.0)
    assert not outcome.delivered and outcome.unreachable and "Timeout" in str(outcome.error)
    assert time.monotonic() - started < 2.0


def test_a_huge_response_body_is_not_read(raw: Callable[[Behaviour], RawEndpoint]) -> None:
    size = 64 * 1024 * 1024
    sent = [0]

    def huge(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        chunk = b"x" * 65536
        while sent[0] < size:
            conn.sendall(chunk)
            sent[0] += len(chunk)

    server = raw(huge)
    outcome = deliver_within(sender_for(server.url, timeout_s=5.0), 10.0)
    assert outcome.delivered and outcome.http_status == 200
    assert sent[0] < size // 4, f"the client read {sent[0]} bytes of the body"


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",  # cut mid-body
    b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n",  # a body never sent
    b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nnot chunks",
])
def test_a_2xx_whose_body_then_fails_is_delivered(
        raw: Callable[[Behaviour], RawEndpoint], answer: bytes) -> None:
    """Only the status counts: a body cut short or badly framed after it once read as
    "no answer", and the event was posted again and again behind an open breaker."""
    server = raw(lambda conn: conn.sendall(answer))
    outcome = deliver_within(sender_for(server.url, max_attempts=2), 5.0)
    assert outcome.delivered and outcome.attempts == 1, outcome


@pytest.mark.parametrize("answer", [
    b"HELLO THERE\r\n\r\n",  # not HTTP
    b"HTTP/1.1 200",  # cut mid-status line
    b"\x00\xff" * 100,
    b"",  # closed at once
])
def test_broken_answers_are_failed_attempts_not_exceptions(
        raw: Callable[[Behaviour], RawEndpoint], answer: bytes) -> None:
    server = raw(lambda conn: conn.sendall(answer))
    outcome = deliver_within(sender_for(server.url, max_attempts=2), 5.0)
    assert not outcome.delivered and outcome.attempts == 2 and outcome.error


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
REFUSED = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"


def test_a_stray_second_answer_is_not_taken_for_the_next_requests(
        raw: Callable[[Behaviour], RawEndpoint]) -> None:
    """A receiver that answers one request twice (in one write) and refuses the next: the
    kept-alive connection held the stray answer, and the next request read it as its
    own (`delivered`, 200) while the receiver answered it 500. Also guards the httpcore
    and h11 internals `webhook_transport._close_desynced` reads."""
    answered: list[bytes] = []

    def answers_twice_then_refuses(conn: socket.socket) -> None:
        while True:  # (the request is read: one per turn, on any connection)
            answered.append(REFUSED if answered else OK + OK)
            conn.sendall(answered[-1])
            read_request(conn)

    endpoint = raw(answers_twice_then_refuses)
    sender = sender_for(endpoint.url)
    try:
        first = sender.deliver([{"seq": 1, "type": "daemon_started"}])
        assert first.delivered and first.http_status == 200
        pool = sender.client._transport._transport._pool  # type: ignore[attr-defined]
        (connection,) = pool.connections  # kept alive, holding the stray answer
        assert connection._connection._h11_state.trailing_data[0] == OK
        second = sender.deliver([{"seq": 2, "type": "daemon_started"}])
        assert not second.delivered and second.http_status == 500, second
        assert endpoint.connections == 2  # the desynced connection was not reused
        assert answered == [OK + OK, REFUSED]
    finally:
        sender.client.close()


def test_a_receiver_that_always_answers_twice_is_told_once_per_interval(
        raw: Callable[[Behaviour], RawEndpoint]) -> None:
    """Each request's connection is closed (none is read twice), but the warning is one line
    per DESYNCED_WARN_EVERY_S per endpoint, not one per event."""

    def always_answers_twice(conn: socket.socket) -> None:
        while True:
            conn.sendall(OK + OK)
            read_request(conn)

    endpoint = raw(always_answers_twice)
    sender = sender_for(endpoint.url)
    try:
        with captured_logs() as entries:
            for seq in range(1, 5):
                assert sender.deliver([{"seq": seq, "type": "daemon_started"}]).delivered
            assert endpoint.connections == 4  # each desynced connection was closed
            lines = [e for e in entries if e["event"] == "webhook_connection_desynced"]
            assert len(lines) == 1, lines
            assert lines[0]["webhook"] == "probe" and lines[0]["desynced_total"] == 1
            sender.client.close()  # the rest, held back, are told at the stop
            lines = [e for e in entries if e["event"] == "webhook_connection_desynced"]
            assert [line["desynced_total"] for line in lines] == [1, 3], lines
    finally:
        sender.client.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_to_a_private_address_is_not_followed(
        raw: Callable[[Behaviour], RawEndpoint], status: int) -> None:
    target = raw(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    server = raw(lambda conn: conn.sendall(
        b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
        % (status, target.url.encode())))
    outcome = deliver_within(sender_for(server.url, max_attempts=3), 5.0)
    assert not outcome.delivered and outcome.http_status == status and outcome.attempts == 1
    assert target.connections == 0


@pytest.mark.parametrize(("value", "expected"), [
    ("9" * 400, math.inf), ("-5", None), ("\xff\xfe", None), ("1.5", None), ("", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("Fri, 99 Foo 2015 99:99:99 GMT", None),
    ("¹²", None),
])
def test_odd_retry_after_values(value: str, expected: float | None) -> None:
    assert retry_after_s(value, now=time.time()) == expected


def test_a_huge_retry_after_waits_no_more_than_backoff_max_s(
        raw: Callable[[Behaviour], RawEndpoint]) -> None:
    server = raw(lambda conn: conn.sendall(
        b"HTTP/1.1 503 Busy\r\nRetry-After: " + b"9" * 400
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))
    waits: list[float] = []
    sender = sender_for(server.url, max_attempts=2)
    sender.sleep = waits.append
    outcome = deliver_within(sender, 5.0)
    assert not outcome.delivered and outcome.http_status == 503
    assert waits == [sender.config.backoff_max_s]


@pytest.mark.parametrize("url", [
    "ftp://hooks.example/", "http://", "http:///path", "http://user:pw@hooks.example/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://hooks.example:99999/",
    " http://hooks.example/", "http://hooks.example/\n", "http://hooks\u200b.example/",
])
def test_odd_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.url"):
        parse_webhooks([{"name": "a", "url": url, "secret": "s"}])


@pytest.mark.parametrize("events", [[""], [5], [None], "node_failed", [["x"]]])
def test_odd_events_entries_are_config_errors(events: Any) -> None:
    with pytest.raises(ConfigError, match=r"webhooks\[0\]\.events"):
        parse_webhooks([{"name": "a", "url": "https://hooks.example/", "secret": "s",
                         "events": events}])


def strict_json(body: bytes) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {body[:200]!r}")

    return json.loads(body.decode("utf-8"), parse_constant=refuse)


ODD_VALUES = [float("nan"), float("inf"), -float("inf"), {b"k": 1}, {(1, 2): "t"},
              "\udc80lone", 10 ** 5000, b"\xff\xfe", {1, 2}, [[[[[[[]]]]]]]]


@pytest.mark.parametrize("value", ODD_VALUES, ids=lambda v: type(v).__name__)
def test_body_of_odd_values_is_strict_utf8_json(value: Any) -> None:
    body = body_of([{"v": 1, "type": "node_completed", "seq": 1, "outputs": value}])
    assert strict_json(body)["seq"] == 1


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(),
                      st.binary(max_size=8))


@settings(max_examples=150, deadline=None)
@given(st.recursive(json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=4), st.integers(), st.binary(max_size=4)),
                    inner, max_size=4)), max_leaves=20))
def test_body_of_anything_is_strict_utf8_json(value: Any) -> None:
    body = body_of([{"seq": 1, "outputs": value}, {"seq": 2}])
    assert [e["seq"] for e in strict_json(body)] == [1, 2]


def node_completed(outputs: Any) -> dict[str, Any]:
    return {"v": 1, "type": "node_completed", "execution_id": "exec_probe_0123abcd",
            "correlation_id": "exec_probe_0123abcd", "workflow_id": "probe", "bot_id": None,
            "strategy_id": None, "wseq": 1, "state": "NORMAL", "node_id": "n",
            "duration_ms": 1.0, "status": "success", "outputs": outputs, "attempt": 1}


@pytest.fixture
def endpoint() -> Iterator[EndpointServer]:
    with EndpointServer() as server:
        yield server


def test_events_with_odd_values_are_delivered_as_json_and_the_deliverer_goes_on(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    engine, manager, _ = webhooks(hook(endpoint.url))
    engine.sink.emit([node_completed({"nan": float("nan"), "bytes_key": {b"k": 1}})])
    engine.sink.emit([node_completed({"plain": 1})])
    endpoint.wait_for(lambda requests: len(requests) >= 2, timeout=DEADLINE_S)
    first, second = (strict_json(r.body) for r in endpoint.requests[:2])
    assert first["outputs"] == {"nan": "nan", "bytes_key": {"b'k'": 1}}
    assert second["outputs"] == {"plain": 1}
    assert manager.status()[0]["last_error"] is None


def test_stop_is_prompt_while_a_slow_loris_holds_a_delivery(
        webhooks: WebhooksFactory, raw: Callable[[Behaviour], RawEndpoint]) -> None:
    asked = threading.Event()

    def hang(conn: socket.socket) -> None:  # answers a header line at a time, for ever
        asked.set()
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        while not server.stop.wait(0.1):
            conn.sendall(b"X-Slow: 1\r\n")

    server = raw(hang)
    engine, manager, _ = webhooks(hook(server.url, timeout_s=1.0))
    engine.sink.emit([node_completed({"x": 1})])
    assert asked.wait(DEADLINE_S)
    started = time.monotonic()
    manager.stop(timeout=5.0)
    assert time.monotonic() - started < 3.0
    assert all(not d._thread or not d._thread.is_alive() for d in manager.deliverers.values())


class HangingResolver:
    """A resolver that blocks until `release` is set (a DNS server that never answers),
    then answers 127.0.0.1; counts its calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        self.release.wait(DEADLINE_S)
        return ["127.0.0.1"]


def test_a_hanging_dns_lookup_is_a_timed_out_attempt_within_timeout_s() -> None:
    resolver, waits = HangingResolver(), list[float]()
    sender = sender_for("http://hooks.example.test:9/hook", timeout_s=0.2, max_attempts=3,
                        resolver=resolver, sleep=waits.append)
    started = time.monotonic()
    try:
        outcome = deliver_within(sender, 5.0)  # before: held until the resolver returned
    finally:
        resolver.release.set()
    assert time.monotonic() - started < 3.0
    assert not outcome.delivered and outcome.unreachable and outcome.attempts == 3
    assert outcome.error is not None and "ConnectTimeout" in outcome.error
    assert "resolving 'hooks.example.test' took more than timeout_s" in outcome.error
    assert len(waits) == 2  # the usual backoff between the attempts
    assert resolver.calls == 1  # later attempts wait on the lookup in flight: one thread


def test_a_hanging_dns_lookup_opens_the_breaker_and_the_endpoint_catches_up_after(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    resolver = HangingResolver()
    try:
        engine, manager, _ = webhooks(
            hook(f"http://hooks.example.test:{endpoint.port}/hook", timeout_s=0.2,
                 max_attempts=2), resolver=resolver)
        engine.sink.emit([node_completed({"x": 1})])
        rows = wait_log(manager, lambda rows: any(r["outcome"] == "unreachable"
                                                  for r in rows), timeout=DEADLINE_S)
        assert "took more than timeout_s" in rows[0]["error"]
        assert manager.status()[0]["breaker"] == "open"
    finally:
        resolver.release.set()
    endpoint.wait_for(lambda requests: len(requests) >= 1, timeout=DEADLINE_S)
    wait_log(manager, lambda rows: rows[0]["outcome"] == "delivered", timeout=DEADLINE_S)
    assert manager.status()[0]["breaker"] == "closed"
