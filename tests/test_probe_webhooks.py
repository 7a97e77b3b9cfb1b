"""Probes of the webhooks with an operator's odd config: values that passed the config
check and then broke every delivery at run time (a traceback a second, nothing sent).
Each must instead stop start-up with one line naming the key."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.config import Config
from actors.engine import Engine
from actors.errors import ConfigError, NotFound
from actors.webhook import WebhookManager
from tests.conftest import EngineFactory
from tests.ports import free_port
from tests.test_webhooks import Sleeps, emit, hook
from tests.test_webhooks_probe import deliver_within, sender_for
from tests.webhook_server import EndpointServer

DEADLINE_S = 10.0


def wait_until(check: Callable[[], object], what: str) -> None:
    """Poll `check` until it is true; fail with `what` after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.02)


@pytest.fixture
def endpoint() -> Iterator[EndpointServer]:
    with EndpointServer() as server:
        yield server


def manager_for(make_engine: EngineFactory, tmp_path: Any, url: str, environ: dict[str, str],
                **extra: Any) -> tuple[Engine, WebhookManager]:
    config = {"daemon": {"data_dir": str(tmp_path / "data")}, "webhooks": [hook(url, **extra)]}
    engine = make_engine(config)
    assert engine.journal is not None
    return engine, WebhookManager(Config.from_dict(config).webhooks, engine.journal,
                                  environ=environ)


@pytest.mark.parametrize("auth", [{"type": "bearer", "token_env": "TOKEN"},
                                  {"type": "header", "header": "X-Api-Key",
                                   "token_env": "TOKEN"}], ids=["bearer", "header"])
@pytest.mark.parametrize("token", ["pässword", "a\nb", "k\r\nX-Evil: 1", " padded", "tab\t",
                                   "nul\x00"])
def test_an_auth_token_no_header_can_carry_is_a_config_error(
        make_engine: EngineFactory, tmp_path: Any, endpoint: EndpointServer,
        auth: dict[str, Any], token: str) -> None:
    # Before: accepted; every attempt then raised UnicodeEncodeError (a traceback a second,
    # the endpoint stuck for ever) or a protocol error (the endpoint "down" for ever).
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.auth\.token_env: .*TOKEN"):
        manager_for(make_engine, tmp_path, endpoint.url, {"TOKEN": token}, auth=auth)


def test_a_token_with_inner_spaces_and_punctuation_is_sent_as_is(
        make_engine: EngineFactory, tmp_path: Any, endpoint: EndpointServer) -> None:
    token = "k3y with spaces/+=~!"
    engine, manager = manager_for(
        make_engine, tmp_path, endpoint.url, {"TOKEN": token},
        auth={"type": "header", "header": "X-Api-Key", "token_env": "TOKEN"})
    manager.start()
    try:
        emit(engine, 1)
        (request,) = endpoint.wait_for(lambda reqs: len(reqs) >= 1, timeout=DEADLINE_S)
        assert request.headers["X-Api-Key"] == token
    finally:
        manager.stop()


@pytest.mark.parametrize("timeout_s", [1e10, 1e300])
def test_a_timeout_past_what_a_socket_takes_is_a_config_error(timeout_s: float) -> None:
    # Before: accepted; every attempt then raised OverflowError at connect (time_t).
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.timeout_s"):
        Config.from_dict({"webhooks": [hook("https://hooks.example/", timeout_s=timeout_s)]})


def test_a_day_long_timeout_is_accepted() -> None:
    config = Config.from_dict({"webhooks": [hook("https://hooks.example/", timeout_s=86400)]})
    assert config.webhooks[0].timeout_s == 86400.0


@pytest.mark.parametrize("entry", [
    "execution_faild", "Execution_failed", "heartbeat", "gap", "emergncy/", "topic/x",
    "/execution_failed", "emergency/risk_limit_exceded", "system/daemon_stoped",
    "workflow//node_failed", "workflow/arb/node_faild", "workflow/arb trade/",
    "emergency/execution_failed", "system/node_", "workflow/arb/daemon_started",
])
def test_an_events_entry_that_can_match_nothing_is_a_config_error(entry: str) -> None:
    # Before: accepted, and the endpoint silently got nothing (EventSink.subscribe refuses
    # an unknown type for the same reason).
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.events\[1\]: "):
        Config.from_dict({"webhooks": [hook("https://hooks.example/",
                                            events=["execution_failed", entry])]})


@pytest.mark.parametrize("entry", [
    "daemon_started", "emergency/", "emergency/risk_limit_", "system/", "system/circuit_",
    "workflow/", "workflow/arb", "workflow/arb_v1.2-x/", "workflow/arb/node_",
    "workflow/arb/execution_failed",
])
def test_types_and_topic_prefixes_that_can_match_are_accepted(entry: str) -> None:
    config = Config.from_dict({"webhooks": [hook("https://hooks.example/", events=[entry])]})
    assert config.webhooks[0].events == (entry,)



def test_retry_leaves_alone_the_dead_letters_of_an_endpoint_no_longer_configured(
        make_engine: EngineFactory, tmp_path: Any, endpoint: EndpointServer) -> None:
    endpoint.default_status = 400
    engine, old = manager_for(make_engine, tmp_path, endpoint.url, {})
    old.start()
    emit(engine, 1)
    wait_until(old.failed, "no dead letter")
    (letter,) = old.failed()
    old.stop()
    assert engine.journal is not None
    renamed = WebhookManager(Config.from_dict({"webhooks": [
        hook(endpoint.url, name="ops2")]}).webhooks, engine.journal, environ={})
    renamed.start()
    try:
        # Before: both re-queued it for a deliverer that does not exist: it left `failed`
        # and was never sent ("requeued" said otherwise).
        assert renamed.retry() == {"requeued": [], "count": 0}
        with pytest.raises(NotFound, match=rf"^dead letter {letter['id']} is of webhook 'ops'"
                                           r", not configured"):
            renamed.retry(ids=(letter["id"],))
        assert [row["id"] for row in renamed.failed()] == [letter["id"]]
    finally:
        renamed.stop()


BAD_DNS_NAMES = ["a..b", "a" * 64 + ".example", ".example"]


@pytest.mark.parametrize("host", BAD_DNS_NAMES)
def test_a_host_that_is_no_dns_name_is_a_config_error(host: str) -> None:
    # Before: accepted; the resolver then raised UnicodeError at every attempt.
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.url: .* is not a DNS name"):
        Config.from_dict({"webhooks": [hook(f"http://{host}/hook")]})


@pytest.mark.parametrize("host", BAD_DNS_NAMES)
def test_a_host_the_resolver_cannot_encode_is_an_unreachable_attempt(host: str) -> None:
    # Past the config check (a WebhookConfig built in code): before, UnicodeError escaped
    # the delivery (the deliverer logged a traceback a second and retried for ever).
    sender = sender_for(f"http://{host}/hook", max_attempts=2)
    outcome = deliver_within(sender, 5.0)
    assert not outcome.delivered and outcome.unreachable and outcome.attempts == 2
    assert outcome.error is not None and "cannot resolve" in outcome.error


def test_an_endpoint_down_while_events_flow_holds_retention_and_then_gets_them_all(
        make_engine: EngineFactory, tmp_path: Any) -> None:
    port = free_port()  # nothing listens yet: the endpoint is down, its breaker opens
    config = {"daemon": {"data_dir": str(tmp_path / "data")}, "journal": {"keep_events": 5},
              "webhooks": [hook(f"http://127.0.0.1:{port}/hook", batch_max=7)]}
    engine = make_engine(config)
    journal = engine.journal
    assert journal is not None
    manager = WebhookManager(Config.from_dict(config).webhooks, journal, environ={},
                             sleep=Sleeps())
    manager.start()
    try:
        first = journal.last_committed_seq() + 1
        for _ in range(60):  # one batch row each: retention prunes whole rows
            emit(engine, 1)
            assert journal.wait_committed(engine.sink.last_seq, DEADLINE_S)
        wait_until(lambda: manager.status()[0]["breaker"] == "open",
                   "the breaker never opened")
        assert journal.prune()
        assert journal.first_seq() <= first, "retention pruned what the endpoint has not had"
        last = journal.last_committed_seq()
        with EndpointServer(port) as endpoint:
            endpoint.wait_for(lambda reqs: bool(reqs) and reqs[-1].seqs[-1] >= last,
                              timeout=DEADLINE_S)
            seqs = endpoint.delivered_seqs()
        assert sorted(set(seqs)) == list(range(first, last + 1)) and seqs == sorted(seqs)
        assert manager.failed() == []
    finally:
        manager.stop()


def test_a_basic_auth_username_with_a_colon_is_a_config_error() -> None:
    # Before: accepted; the receiver reads "user:password" up to the first colon, so every
    # delivery was refused and dead-lettered.
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.auth\.username must not contain"):
        Config.from_dict({"webhooks": [hook("https://hooks.example/", auth={
            "type": "basic", "username": "tl:ops", "password_env": "PW"})]})


def test_basic_auth_reaches_the_receiver_as_user_and_password(
        make_engine: EngineFactory, tmp_path: Any, endpoint: EndpointServer) -> None:
    engine, manager = manager_for(
        make_engine, tmp_path, endpoint.url, {"PW": "pa:ss wörd"},
        auth={"type": "basic", "username": "tl-ops", "password_env": "PW"})
    manager.start()
    try:
        emit(engine, 1)
        (request,) = endpoint.wait_for(lambda reqs: len(reqs) >= 1, timeout=DEADLINE_S)
        scheme, _, encoded = request.headers["Authorization"].partition(" ")
        user, _, password = base64.b64decode(encoded).decode().partition(":")
        assert (scheme, user, password) == ("Basic", "tl-ops", "pa:ss wörd")
    finally:
        manager.stop()


def test_retrying_the_same_dead_letter_twice_says_it_is_queued_or_delivered_already(
        make_engine: EngineFactory, tmp_path: Any, endpoint: EndpointServer) -> None:
    endpoint.default_status = 400
    engine, manager = manager_for(make_engine, tmp_path, endpoint.url, {})
    endpoint.gate = threading.Event()  # holds the re-sent letter: it stays "queued"
    endpoint.gate.set()
    manager.start()
    try:
        emit(engine, 1)
        wait_until(manager.failed, "no dead letter")
        (letter,) = manager.failed()
        endpoint.default_status = 200
        endpoint.gate.clear()
        asked = len(endpoint.requests)
        assert manager.retry(ids=(letter["id"],)) == {"requeued": [letter["id"]], "count": 1}
        endpoint.wait_for(lambda reqs: len(reqs) > asked, timeout=DEADLINE_S)
        with pytest.raises(NotFound, match=rf"^dead letter {letter['id']} is queued already$"):
            manager.retry(ids=(letter["id"],))
        endpoint.gate.set()
        wait_until(lambda: any(r["outcome"] == "retry_delivered" for r in manager.log()),
                   "the retry was not delivered")
        with pytest.raises(NotFound, match=rf"^dead letter {letter['id']} is delivered "
                                           rf"already; no dead letter with id 999999$"):
            manager.retry(ids=(letter["id"], 999999))
    finally:
        endpoint.gate.set()
        manager.stop()
