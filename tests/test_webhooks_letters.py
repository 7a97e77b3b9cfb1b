"""Re-sent dead letters against a real HTTP endpoint on 127.0.0.1: a re-send that gets
through closes the breaker it found open; a retry of every dead letter works in pages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors.webhook import WebhookManager
from tests.test_webhooks import WebhooksFactory, emit, hook, wait_log, webhooks
from tests.webhook_server import EndpointServer

__all__ = ["webhooks"]  # the fixture, re-used

DEADLINE_S = 10.0


@pytest.fixture
def endpoint() -> Iterator[EndpointServer]:
    with EndpointServer() as server:
        yield server


class SwitchedResolver:
    """127.0.0.1 while up; while down, a lookup that fails (no HTTP answer: unreachable)."""

    def __init__(self) -> None:
        self.down = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        if self.down.is_set():
            raise OSError("the test's DNS is down")
        return ["127.0.0.1"]


def dead_letters(webhooks: WebhooksFactory, endpoint: EndpointServer, count: int,
                 resolver: Any = None) -> WebhookManager:
    """A manager whose endpoint refused `count` events: that many dead letters."""
    endpoint.default_status = 400
    engine, manager, _ = webhooks(
        hook(f"http://hooks.example.test:{endpoint.port}/hook", events=["daemon_started"],
             max_attempts=1), resolver=resolver or SwitchedResolver())
    emit(engine, count)
    wait_log(manager, lambda rows: sum(r["outcome"] == "dead" for r in rows) == count,
             timeout=DEADLINE_S)
    assert engine.journal is not None and engine.journal.flush(DEADLINE_S)
    assert len(manager.failed()) == count
    return manager


def test_a_re_send_that_gets_through_closes_the_breaker(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    resolver = SwitchedResolver()
    manager = dead_letters(webhooks, endpoint, 1, resolver)
    resolver.down.set()
    endpoint.default_status = 200
    assert len(manager.retry()["requeued"]) == 1
    wait_log(manager, lambda rows: rows[0]["outcome"] == "unreachable", timeout=DEADLINE_S)
    assert manager.status()[0]["breaker"] == "open"
    resolver.down.clear()  # the letter's next try gets through; no new event comes
    wait_log(manager, lambda rows: rows[0]["outcome"] == "retry_delivered",
             timeout=DEADLINE_S)
    # Before: "open" until the next new event was delivered.
    assert manager.status()[0]["breaker"] == "closed"
    assert manager.failed() == []
