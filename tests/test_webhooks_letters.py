"""Dead letters against a real HTTP endpoint on 127.0.0.1: a re-send that gets through
closes the breaker it found open; a retry of every dead letter works in pages; an
endpoint removed from the config leaves dead letters an operator lists and deletes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from actors import webhook, webhook_store
from actors.config import Config
from actors.errors import NotFound
from actors.journal import Journal
from actors.webhook import WebhookManager
from tests.conftest import EngineFactory
from tests.test_webhooks import WebhooksFactory, emit, endpoint, hook, wait_log, webhooks
from tests.webhook_server import EndpointServer

__all__ = ["endpoint", "webhooks"]  # the fixtures, re-used

DEADLINE_S = 10.0


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


def test_retry_of_every_dead_letter_reads_and_queues_them_a_page_at_a_time(
        webhooks: WebhooksFactory, endpoint: EndpointServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    manager = dead_letters(webhooks, endpoint, 11)
    ids = [row["id"] for row in manager.failed()]
    monkeypatch.setattr(webhook_store, "REQUEUE_PAGE", 4)
    monkeypatch.setattr(webhook_store, "RETRY_IDS_LISTED", 5)
    store, caller = manager.store, threading.get_ident()
    query, rows_read, queued = store._query, list[int](), list[int]()
    record = store.journal.record_webhook

    def counting_query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows = query(sql, params)
        if threading.get_ident() == caller:  # the retry's reads, not a deliverer's
            rows_read.append(len(rows))
        return rows

    def counting_record(rec: Any) -> Any:
        if threading.get_ident() == caller:
            queued.append(len(rec.letter_ids))
        return record(rec)

    monkeypatch.setattr(store, "_query", counting_query)
    monkeypatch.setattr(store.journal, "record_webhook", counting_record)
    endpoint.default_status = 200
    reply = manager.retry()
    assert reply == {"requeued": ids[:5], "count": 11}  # every one; the first 5 listed
    assert max(rows_read) <= 4, rows_read  # before: all 11 rows in one read
    assert queued == [4, 4, 3]
    wait_log(manager, lambda rows: sum(r["outcome"] == "retry_delivered"
                                       for r in rows) == 11, timeout=DEADLINE_S)
    assert manager.failed() == []
    assert sorted(endpoint.delivered_seqs()[11:]) == sorted(endpoint.delivered_seqs()[:11])


def test_a_retry_of_more_letters_than_a_turn_sends_them_all_once(
        webhooks: WebhooksFactory, endpoint: EndpointServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deliverer sends re-queued letters a page per turn; only the first page went, and
    the rest stayed queued with nothing to show for it (`failed` lists dead ones only)."""
    manager = dead_letters(webhooks, endpoint, 11)
    monkeypatch.setattr(webhook, "LETTERS_PER_TURN", 4)
    endpoint.default_status = 200
    assert manager.retry()["count"] == 11
    wait_log(manager, lambda rows: sum(r["outcome"] == "retry_delivered"
                                       for r in rows) == 11, timeout=DEADLINE_S)
    first, again = endpoint.delivered_seqs()[:11], endpoint.delivered_seqs()[11:]
    assert sorted(again) == sorted(first), "each letter sent again exactly once"
    store = manager.store
    assert store.journal.flush(DEADLINE_S)
    assert [store.queued(name, 100) for name in manager.deliverers] == [[]]


def test_a_retry_while_a_page_is_on_the_wire_sends_what_it_re_queued(
        webhooks: WebhooksFactory, endpoint: EndpointServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Letters that died again in a round, re-queued by a second `retry` while the round's
    next page was being sent: the retry's reset of the round's position was overwritten
    by that page, and the letters (below it) stayed queued, sent by nobody (helper-87)."""
    manager = dead_letters(webhooks, endpoint, 11)
    monkeypatch.setattr(webhook, "LETTERS_PER_TURN", 4)
    deliverer = manager.deliverers["ops"]
    real, calls = deliverer.sender.deliver, [0]
    sending, go_on = threading.Event(), threading.Event()

    def deliver(events: list[dict[str, Any]], **options: Any) -> Any:
        calls[0] += 1
        if calls[0] == 6:  # a letter of the round's second page
            sending.set()
            go_on.wait(DEADLINE_S)
        return real(events, **options)

    monkeypatch.setattr(deliverer.sender, "deliver", deliver)
    endpoint.default_status = 200
    endpoint.script(400, 400)  # the first two letters die again
    assert manager.retry()["count"] == 11
    assert sending.wait(DEADLINE_S)
    assert manager.store.journal.flush(DEADLINE_S)
    assert len(manager.failed()) == 2
    assert manager.retry()["count"] == 2  # the operator re-queues them, mid-round
    go_on.set()
    wait_log(manager, lambda rows: sorted(r["first_seq"] for r in rows
                                          if r["outcome"] == "retry_delivered")
             == list(range(1, 12)), timeout=DEADLINE_S)
    assert manager.store.journal.flush(DEADLINE_S)
    assert manager.store.queued("ops", 100) == [] and manager.failed() == []


def three_dead_letters_of_ops(make_engine: EngineFactory, tmp_path: Path,
                              endpoint: EndpointServer) -> tuple[Journal, list[int]]:
    """A journal holding 3 dead letters of webhook "ops" (its manager stopped); their ids."""
    endpoint.default_status = 400
    config = {"daemon": {"data_dir": str(tmp_path / "data")},
              "webhooks": [hook(endpoint.url, events=["daemon_started"], max_attempts=1)]}
    engine = make_engine(config)
    assert engine.journal is not None
    old = WebhookManager(Config.from_dict(config).webhooks, engine.journal, environ={})
    old.start()
    emit(engine, 3)
    wait_log(old, lambda rows: sum(r["outcome"] == "dead" for r in rows) == 3,
             timeout=DEADLINE_S)
    assert engine.journal.flush(DEADLINE_S)
    ids = [row["id"] for row in old.failed()]
    old.stop()
    return engine.journal, ids


def test_a_removed_endpoints_dead_letters_are_listed_and_deleted_not_retried(
        make_engine: EngineFactory, tmp_path: Path, endpoint: EndpointServer) -> None:
    journal, ids = three_dead_letters_of_ops(make_engine, tmp_path, endpoint)
    # "ops" is removed from the config (renamed "ops2") and the webhooks start again.
    renamed = WebhookManager(Config.from_dict({"webhooks": [
        hook(endpoint.url, name="ops2")]}).webhooks, journal, environ={})
    renamed.start()
    try:
        # Before: "no webhook named 'ops'"; only a list of every endpoint's showed them.
        assert [row["id"] for row in renamed.failed("ops")] == ids
        with pytest.raises(NotFound, match=r"^no webhook named 'ops'; configured: ops2; 3 "
                                           r"dead letter\(s\) of it are left from before"):
            renamed.retry("ops")
        with pytest.raises(NotFound, match=rf"^dead letter {ids[0]} is of webhook 'ops', not "
                                           r"configured: no endpoint would send it"):
            renamed.retry(ids=(ids[0],))
        assert renamed.delete(ids=(ids[0],)) == {"deleted": [ids[0]], "count": 1}
        with pytest.raises(NotFound, match=rf"^no dead letter with id {ids[0]}$"):
            renamed.delete(ids=(ids[0],))
        assert renamed.delete("ops") == {"deleted": ids[1:], "count": 2}
        assert renamed.failed() == []
        with pytest.raises(NotFound, match=r"^no webhook named 'ops'; configured: ops2$"):
            renamed.failed("ops")  # nothing of it is left
        with pytest.raises(ValueError, match="name a webhook or dead letter ids"):
            renamed.delete()
    finally:
        renamed.stop()


def test_letters_queued_for_an_endpoint_since_removed_are_dead_again_at_start(
        make_engine: EngineFactory, tmp_path: Path, endpoint: EndpointServer) -> None:
    # Re-queued, then the endpoint was removed before it sent them: left "queued", no
    # deliverer would ever send them, and listing, retry and delete saw none of them.
    journal, ids = three_dead_letters_of_ops(make_engine, tmp_path, endpoint)
    store = webhook_store.WebhookStore(journal)
    assert store.requeue("ops").count == 3  # the retry, just before the restart
    store.close()
    renamed = WebhookManager(Config.from_dict({"webhooks": [
        hook(endpoint.url, name="ops2")]}).webhooks, journal, environ={})
    renamed.start()
    try:
        assert [row["id"] for row in renamed.failed("ops")] == ids
        assert renamed.delete("ops") == {"deleted": ids, "count": 3}
    finally:
        renamed.stop()


def test_deleted_dead_letters_no_longer_count_towards_the_cap(
        webhooks: WebhooksFactory, endpoint: EndpointServer) -> None:
    endpoint.default_status = 400
    engine, manager, _ = webhooks(hook(endpoint.url, events=["daemon_started"],
                                       max_attempts=1, max_dead_letters=3))
    emit(engine, 3)
    wait_log(manager, lambda rows: sum(r["outcome"] == "dead" for r in rows) == 3,
             timeout=DEADLINE_S)
    first, *rest = [row["id"] for row in manager.failed()]
    assert manager.delete("ops", ids=tuple(rest))["count"] == 2
    emit(engine, 2)
    wait_log(manager, lambda rows: sum(r["outcome"] == "dead" for r in rows) == 5,
             timeout=DEADLINE_S)
    assert engine.journal is not None and engine.journal.flush(DEADLINE_S)
    assert manager.status()[0]["dropped"] == 0  # 3 held, not 5: nothing pushed out
    assert len(manager.failed()) == 3 and manager.failed()[0]["id"] == first
