"""Webhook delivery against a real HTTP endpoint on 127.0.0.1 (tests/webhook_server.py):
signing, retries, Retry-After, dead letters and their retry, the SSRF guard."""

from __future__ import annotations

import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from actors.config import Config
from actors.engine import Engine
from actors.errors import WebhookAddressRefused
from actors.webhook import WebhookManager
from actors.webhook_transport import make_client
from actors.workflow import Node, Workflow
from examples.webhook_receiver import verify
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import eventually
from tests.webhook_server import EndpointServer
from transport.engine_handler import EngineControlHandler

SECRET = "s3cret"


@pytest.fixture
def endpoint() -> Iterator[EndpointServer]:
    with EndpointServer() as server:
        yield server


class Sleeps:
    """The injected sleep: records each wait asked for, waits only a moment."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        threading.Event().wait(0.005)


def hook(url: str, **extra: Any) -> dict[str, Any]:
    return {"name": "ops", "url": url, "secret": SECRET, "allow_private": True,
            "backoff_initial_s": 0.01, "backoff_max_s": 0.05, **extra}


WebhooksFactory = Callable[..., tuple[Engine, WebhookManager, Sleeps]]


@pytest.fixture
def webhooks(make_engine: EngineFactory, tmp_path: Any) -> Iterator[WebhooksFactory]:
    managers: list[WebhookManager] = []

    def factory(*hooks: dict[str, Any], resolver: Any = None) -> tuple[Engine, WebhookManager,
                                                                        Sleeps]:
        config = {"daemon": {"data_dir": str(tmp_path / "data")}, "webhooks": list(hooks)}
        engine = make_engine(config)
        assert engine.journal is not None
        sleeps = Sleeps()
        extra = {"resolver": resolver} if resolver is not None else {}
        manager = WebhookManager(Config.from_dict(config).webhooks, engine.journal,
                                 environ={}, sleep=sleeps, **extra)
        manager.start()
        managers.append(manager)
        return engine, manager, sleeps

    yield factory
    for manager in managers:
        manager.stop()


def emit(engine: Engine, count: int) -> None:
    for i in range(count):
        engine.sink.emit([{"v": 1, "type": "daemon_started", "version": f"t{i}", "pid": i}])


def wait_log(manager: WebhookManager, predicate: Callable[[list[dict[str, Any]]], bool],
             timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = manager.log()
        if predicate(rows):
            return rows
        assert time.monotonic() < deadline, f"log not as expected: {rows}"
        threading.Event().wait(0.02)


def test_signed_delivery_verifies(webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    engine, _manager, _ = webhooks(hook(endpoint.url))
    emit(engine, 3)
    requests = endpoint.wait_for(lambda reqs: len(reqs) >= 3)
    seqs = [r.seqs[0] for r in requests]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    assert len({r.headers["X-Tradeloom-Delivery"] for r in requests}) == 3
    for r in requests:
        assert r.headers["X-Tradeloom-Event"] == "daemon_started"
        assert r.headers["X-Tradeloom-Seq"] == str(r.json["seq"])
        assert r.headers["Content-Type"] == "application/json"
        assert verify(SECRET.encode(), r.headers["X-Tradeloom-Timestamp"], r.body,
                      r.headers["X-Tradeloom-Signature"], now=time.time())
        assert not verify(b"wrong", r.headers["X-Tradeloom-Timestamp"], r.body,
                          r.headers["X-Tradeloom-Signature"], now=time.time())


def test_503_twice_then_200_is_delivered_in_three_attempts(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    endpoint.script(503, 503)
    engine, manager, sleeps = webhooks(hook(endpoint.url))
    emit(engine, 1)
    requests = endpoint.wait_for(lambda reqs: len(reqs) >= 3)
    assert [r.status for r in requests] == [503, 503, 200]
    assert len({r.headers["X-Tradeloom-Delivery"] for r in requests}) == 1
    rows = wait_log(manager, lambda rows: any(r["outcome"] == "delivered" for r in rows))
    assert rows[0]["attempts"] == 3 and rows[0]["http_status"] == 200
    assert len(sleeps.asked) == 2
    assert manager.failed() == []


def test_429_retry_after_is_honoured(webhooks: WebhooksFactory,
                                     endpoint: EndpointServer) -> None:
    endpoint.script((429, {"Retry-After": "7"}))
    engine, manager, sleeps = webhooks(hook(endpoint.url, backoff_max_s=60.0))
    emit(engine, 1)
    endpoint.wait_for(lambda reqs: len(reqs) >= 2)
    assert sleeps.asked == [7.0]
    wait_log(manager, lambda rows: any(r["outcome"] == "delivered" for r in rows))


def test_400_is_dead_lettered_at_once_and_retry_redelivers_it(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    endpoint.script(400)
    engine, manager, sleeps = webhooks(hook(endpoint.url))
    emit(engine, 2)
    requests = endpoint.wait_for(lambda reqs: len(reqs) >= 2)
    assert [r.status for r in requests] == [400, 200]  # the cursor moved on
    bad_seq = requests[0].seqs[0]
    wait_log(manager, lambda rows: any(r["outcome"] == "dead" for r in rows))
    failed = manager.failed()
    assert [(f["seq"], f["attempts"], f["http_status"]) for f in failed] == [(bad_seq, 1, 400)]
    assert sleeps.asked == []
    assert manager.retry("ops")["requeued"] == [failed[0]["id"]]
    requests = endpoint.wait_for(lambda reqs: len(reqs) >= 3)
    assert requests[2].seqs == [bad_seq] and requests[2].status == 200
    wait_log(manager, lambda rows: any(r["outcome"] == "retry_delivered" for r in rows))
    assert manager.failed() == []
    [state] = manager.status("ops")
    assert (state["delivered"], state["dead"]) == (2, 1)  # the re-sent letter counts too


def test_batches_post_a_list(webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    endpoint.script(503)  # the first POST waits, so the rest queue up behind it
    engine, _manager, _ = webhooks(hook(endpoint.url, batch_max=50))
    emit(engine, 5)
    requests = endpoint.wait_for(lambda reqs: sum(len(r.seqs) for r in reqs
                                                  if r.status == 200) >= 5)
    delivered = [s for r in requests if r.status == 200 for s in r.seqs]
    assert delivered == sorted(delivered)
    assert any(r.headers["X-Tradeloom-Event"] == "batch" for r in requests)


def test_with_batch_max_above_1_a_lone_event_is_a_list_of_one(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    """A receiver of a `batch_max > 1` endpoint parses one form: a lone event (nothing
    queued behind it) comes as a list of one, its headers `batch` and `<seq>-<seq>` (it
    was the bare map, under the event's type)."""
    engine, _manager, _ = webhooks(hook(endpoint.url, batch_max=5))
    emit(engine, 1)
    (request,) = endpoint.wait_for(lambda reqs: len(reqs) >= 1)
    assert isinstance(request.json, list) and len(request.json) == 1
    seq = request.json[0]["seq"]
    assert request.headers["X-Tradeloom-Event"] == "batch"
    assert request.headers["X-Tradeloom-Seq"] == f"{seq}-{seq}"
    assert verify(SECRET.encode(), request.headers["X-Tradeloom-Timestamp"], request.body,
                  request.headers["X-Tradeloom-Signature"], now=time.time())


def test_with_batch_max_1_each_event_is_its_map(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    engine, _manager, _ = webhooks(hook(endpoint.url))
    emit(engine, 1)
    (request,) = endpoint.wait_for(lambda reqs: len(reqs) >= 1)
    assert isinstance(request.json, dict)
    assert request.headers["X-Tradeloom-Event"] == "daemon_started"
    assert request.headers["X-Tradeloom-Seq"] == str(request.json["seq"])


def test_the_state_of_one_endpoint_by_name(webhooks: WebhooksFactory,
                                           endpoint: EndpointServer) -> None:
    """`webhooks_log` with `name` lists that endpoint's state only (it listed all)."""
    _engine, manager, _ = webhooks(hook(endpoint.url), {**hook(endpoint.url), "name": "audit"})
    assert [s["name"] for s in manager.status()] == ["ops", "audit"]
    assert [s["name"] for s in manager.status("audit")] == ["audit"]
    assert manager.status("removed_since") == []
    handler = EngineControlHandler(_engine, webhooks=manager)  # what the control op answers
    assert [s["name"] for s in handler.webhooks_log(name="audit", limit=10)["endpoints"]] == [
        "audit"]


def test_a_stop_is_taken_between_posts_not_after_the_page(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    """With a backlog, the deliverer posts nothing more once stopping: a page of events
    (up to 256 POSTs to a slow endpoint) outlasted the stop's 2 s, and the cursor was never
    registered at stop (the endpoint got them again after the restart)."""
    endpoint.gate = threading.Event()  # the first POST is held until released
    engine, manager, _ = webhooks(hook(endpoint.url))
    emit(engine, 20)
    (first,) = endpoint.wait_for(lambda reqs: len(reqs) >= 1)
    for deliverer in manager.deliverers.values():
        deliverer._stopping.set()  # (what manager.stop does first)
    endpoint.gate.set()
    manager.stop(timeout=10.0)
    assert len(endpoint.requests) == 1, [r.seqs for r in endpoint.requests]
    assert manager.status()[0]["next_seq"] == first.seqs[0] + 1

    def cursor_on_disk() -> int | None:  # registered at stop: committed by the journal
        assert engine.journal is not None
        conn = sqlite3.connect(f"{engine.journal.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT seq FROM cursors WHERE name = ?",
                               (manager.deliverers["ops"].hook.cursor_name,)).fetchone()
        finally:
            conn.close()
        return None if row is None else int(row[0])

    eventually(lambda: cursor_on_disk() == first.seqs[0], 10.0, "the cursor at the stop")


def test_ssrf_guard_refuses_loopback_at_connect_time(endpoint: EndpointServer) -> None:
    with make_client(timeout_s=2.0, allow_private=False) as client, \
            pytest.raises(WebhookAddressRefused):
        client.post(endpoint.url, content=b"{}")
    assert endpoint.requests == []
    with make_client(timeout_s=2.0, allow_private=True) as client:
        assert client.post(endpoint.url, content=b"{}").status_code == 200


def test_ssrf_guard_refuses_a_name_resolving_to_a_private_address(
        endpoint: EndpointServer) -> None:
    url = f"http://hooks.example.test:{endpoint.port}/hook"
    with make_client(timeout_s=2.0, allow_private=False,
                     resolver=lambda host, port: ["169.254.169.254"]) as client, \
            pytest.raises(WebhookAddressRefused):
        client.post(url, content=b"{}")
    assert endpoint.requests == []
    # With allow_private the connection goes to the address the resolver gave (a name
    # the system cannot resolve reaches the local endpoint): no second lookup.
    with make_client(timeout_s=2.0, allow_private=True,
                     resolver=lambda host, port: ["127.0.0.1"]) as client:
        assert client.post(url, content=b"{}").status_code == 200


def test_ssrf_guard_checks_every_connect_so_rebinding_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([["93.184.216.34"], ["10.1.2.3"]])  # public, then rebound to private
    dialled: list[tuple[str, int]] = []

    def refuse(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        dialled.append(address)  # no real connection leaves the test
        raise ConnectionRefusedError("refused by the test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with make_client(timeout_s=1.0, allow_private=False,
                     resolver=lambda host, port: next(answers)) as client:
        with pytest.raises(httpx.ConnectError):
            client.post("http://hooks.example.test:8080/", content=b"{}")
        with pytest.raises(WebhookAddressRefused):
            client.post("http://hooks.example.test:8080/", content=b"{}")
    assert dialled == [("93.184.216.34", 8080)]


def test_refused_endpoint_pauses_without_dead_letters(webhooks: WebhooksFactory,
                                                      endpoint: EndpointServer) -> None:
    engine, manager, _ = webhooks(
        hook(f"http://hooks.example.test:{endpoint.port}/hook", allow_private=False),
        resolver=lambda host, port: ["127.0.0.1"])
    emit(engine, 2)
    rows = wait_log(manager, lambda rows: any(r["outcome"] == "unreachable" for r in rows))
    assert "not a public address" in rows[0]["error"]
    assert manager.status()[0]["breaker"] == "open"
    assert manager.failed() == [] and endpoint.requests == []


def test_a_stuck_endpoint_does_not_hold_up_executions(webhooks: WebhooksFactory,
                                                      endpoint: EndpointServer) -> None:
    release = endpoint.gate = threading.Event()
    engine, manager, _ = webhooks(hook(endpoint.url, timeout_s=30.0))
    workflow = Workflow("quick", nodes=[Node("n", lambda ctx: {"x": 1})])
    try:
        emit(engine, 1)
        endpoint.wait_for(lambda reqs: len(reqs) == 1)  # held: the endpoint is stuck
        handles = [engine.submit(workflow) for _ in range(50)]
        assert all(h.result(timeout=10).status == "completed" for h in handles)
        assert len(endpoint.requests) == 1
    finally:
        release.set()
    last = engine.status()["last_seq"]
    endpoint.wait_for(lambda reqs: {s for r in reqs for s in r.seqs} >= set(
        range(reqs[0].seqs[0], last + 1)))
    assert manager.failed() == []
