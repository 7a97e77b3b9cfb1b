"""`[[webhooks]]` config: every bad key named; secrets from the environment at start."""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.config import Config
from actors.errors import ConfigError
from actors.webhook_config import resolve_secrets
from actors.webhook_delivery import sign
from examples.webhook_receiver import BODY_MAX, Receiver, make_server, verify


def hooks(**entry: Any) -> dict[str, Any]:
    return {"webhooks": [{"name": "ops", "url": "https://hooks.example.com/x",
                          "secret": "s3cr3t-value", **entry}]}


def test_a_full_entry_parses() -> None:
    config = Config.from_dict(hooks(events=["execution_failed", "emergency/"], timeout_s=3,
                                    max_attempts=2, batch_max=10, allow_private=True,
                                    auth={"type": "header", "header": "X-Api-Key",
                                          "token_env": "KEY"}))
    (hook,) = config.webhooks
    assert hook.timeout_s == 3.0 and hook.max_attempts == 2 and hook.batch_max == 10
    assert hook.wants("execution_failed", "workflow/w/execution_failed")
    assert hook.wants("risk_limit_exceeded", "emergency/risk_limit_exceeded")
    assert not hook.wants("node_started", "workflow/w/node_started")
    assert "s3cr3t" not in repr(hook)


@pytest.mark.parametrize(("entry", "key"), [
    ({"url": "ftp://x"}, "webhooks[0].url"),
    ({"url": "http://user:pw@x/"}, "webhooks[0].url"),
    ({"url": "http://127.0.0.1:9/"}, "webhooks[0].url"),
    ({"url": "http://[::1]:9/"}, "webhooks[0].url"),
    ({"url": 5}, "webhooks[0].url"),
    ({"url": "https://exa mple.com/x"}, "webhooks[0].url: whitespace"),  # in the host
    ({"url": "https://example.com/a b"}, "webhooks[0].url: whitespace"),  # in the path
    ({"url": "https://example.com/a\u3000b"}, "webhooks[0].url: whitespace"),
    ({"url": " https://example.com/"}, "webhooks[0].url: whitespace"),
    ({"secret_env": "X"}, "webhooks[0].secret"),
    ({"name": "bad name"}, "webhooks[0].name"),
    ({"timeout_s": 0}, "webhooks[0].timeout_s"),
    ({"max_attempts": 0}, "webhooks[0].max_attempts"),
    ({"max_attempts": 1001}, "webhooks[0].max_attempts must be between 1 and 1000"),
    ({"max_attempts": 10 ** 19}, "webhooks[0].max_attempts"),
    ({"max_dead_letters": 0}, "webhooks[0].max_dead_letters"),
    ({"max_dead_letters": 10 ** 19},
     "webhooks[0].max_dead_letters must be between 1 and 10000000"),
    ({"batch_max": 0}, "webhooks[0].batch_max"),
    ({"allow_private": "yes"}, "webhooks[0].allow_private"),
    ({"events": "execution_failed"}, "webhooks[0].events"),
    ({"retries": 3}, "webhooks[0].retries"),
    ({"auth": {"type": "bearer"}}, "webhooks[0].auth.token_env"),
    ({"auth": {"type": "basic", "username": "u"}}, "webhooks[0].auth.password_env"),
    ({"auth": {"type": "header", "header": "X-Tradeloom-Signature", "token_env": "T"}},
     "webhooks[0].auth.header"),
    ({"auth": {"type": "oauth"}}, "webhooks[0].auth.type"),
])
def test_bad_keys_are_named(entry: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Config.from_dict(hooks(**entry))


@pytest.mark.parametrize(("key", "value"), [("secret", 4929173650012345),
                                          ("secret", ["s3cr3t-in-a-list"])])
def test_a_mistyped_secret_is_named_but_never_shown(key: str, value: Any) -> None:
    """An unquoted signing key went to the system log in "must be a string, not ..."."""
    entry = {"name": "ops", "url": "https://example.com/hook", key: value}
    with pytest.raises(ConfigError, match=rf"webhooks\[0\]\.{key} must be a string") as exc:
        Config.from_dict({"webhooks": [entry]})
    assert "4929173650012345" not in str(exc.value) and "s3cr3t" not in str(exc.value)


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "0x7f000001", "10.1",
                                  "0", "0177.0.0.1"])
def test_every_numeric_form_of_a_private_address_is_refused_at_load(host: str) -> None:
    """The resolver reads these as addresses: they once passed the load, and the endpoint
    was then down for good (refused at each connect), holding retention back."""
    with pytest.raises(ConfigError, match=r"^webhooks\[0\]\.url: .*(public|valid)"):
        Config.from_dict({"webhooks": [{"name": "ops", "url": f"http://{host}:8080/hook",
                                        "secret": "s"}]})


@pytest.mark.parametrize("host", ["8.8.8.8", "deadbeef", "0xdeadbeef.example", "1.2.3.4.5"])
def test_names_and_public_numeric_hosts_pass_the_load(host: str) -> None:
    Config.from_dict({"webhooks": [{"name": "ops", "url": f"http://{host}/hook",
                                    "secret": "s"}]})


def test_duplicate_names_are_refused() -> None:
    entry = {"name": "a", "url": "https://x.example.com/", "secret": "k"}
    with pytest.raises(ConfigError, match=r"webhooks\[1\].name: duplicate"):
        Config.from_dict({"webhooks": [entry, entry]})


def test_loopback_is_fine_with_allow_private() -> None:
    assert Config.from_dict(hooks(url="http://127.0.0.1:9/", allow_private=True)).webhooks


def test_secrets_come_from_the_environment() -> None:
    config = Config.from_dict(hooks(secret=None, secret_env="HOOK_KEY",
                                    auth={"type": "basic", "username": "u",
                                          "password_env": "HOOK_PW"}))
    with pytest.raises(ConfigError, match=r"webhooks\[0\].secret_env: environment variable "
                                          "HOOK_KEY is not set"):
        resolve_secrets(config.webhooks, {})
    with pytest.raises(ConfigError, match=r"webhooks\[0\].auth.password_env"):
        resolve_secrets(config.webhooks, {"HOOK_KEY": "k"})
    secrets = resolve_secrets(config.webhooks, {"HOOK_KEY": "s3cr3t", "HOOK_PW": "p"})["ops"]
    assert secrets.signing_key == b"s3cr3t"
    assert secrets.auth_header == ("Authorization", "Basic dTpw")
    assert "s3cr3t" not in repr(secrets)


@given(body=st.binary(max_size=200), secret=st.binary(min_size=1, max_size=40))
def test_the_example_receiver_verifies_our_signature_and_only_it(body: bytes,
                                                                 secret: bytes) -> None:
    signature = sign(secret, "1000", body)
    assert verify(secret, "1000", body, signature, now=1000.0)
    assert not verify(secret + b"x", "1000", body, signature, now=1000.0)  # wrong secret
    assert not verify(secret, "1000", body + b" ", signature, now=1000.0)
    assert not verify(secret, "1000", body, signature, now=1000.0 + 301)  # stale


def test_the_example_receiver_rejects_a_wrong_secret_and_dedups_by_seq() -> None:
    seen: list[int] = []
    receiver = Receiver(b"right", lambda event: seen.append(event["seq"]),
                        clock=lambda: 1000.0)
    body = b'{"seq":7,"type":"x"}'
    wrong = {"X-Tradeloom-Timestamp": "1000", "X-Tradeloom-Signature": sign(b"wrong", "1000",
                                                                            body)}
    assert receiver.receive(wrong, body) == 401 and seen == []
    good = {"X-Tradeloom-Timestamp": "1000", "X-Tradeloom-Signature": sign(b"right", "1000",
                                                                           body)}
    assert receiver.receive(good, body) == 204
    assert receiver.receive(good, body) == 204  # the same seq again: handled once
    assert seen == [7] and receiver.duplicates == 1


def test_the_example_receiver_loses_no_event_when_its_handler_fails() -> None:
    # It once marked the seq seen before the handler ran: the retry of a failed one was
    # answered 204 as a duplicate and the event never handled.
    seen: list[int] = []

    def handle(event: dict[str, Any]) -> None:
        if not receiver.failed:
            raise RuntimeError("the database is down")
        seen.append(event["seq"])

    receiver = Receiver(b"k", handle, clock=lambda: 1000.0)
    body = b'[{"seq":7,"type":"x"},{"seq":8,"type":"x"}]'
    headers = {"X-Tradeloom-Timestamp": "1000",
               "X-Tradeloom-Signature": sign(b"k", "1000", body)}
    assert receiver.receive(headers, body) == 500 and seen == []
    assert receiver.receive(headers, body) == 204 and seen == [7, 8]
    assert receiver.receive(headers, body) == 204 and seen == [7, 8]


@pytest.mark.parametrize("signature", ["sha256=\xe9", "\udcff", ""])
def test_the_example_receiver_refuses_an_odd_signature_header(signature: str) -> None:
    assert not verify(b"k", "1000", b"{}", signature, now=1000.0)


@pytest.mark.parametrize(("length", "status"), [("x", 400), ("-1", 400), ("1e3", 400),
                                                 (str(BODY_MAX + 1), 413)])
def test_the_example_receiver_answers_an_unusable_content_length(length: str,
                                                                 status: int) -> None:
    server = make_server(Receiver(b"k", lambda event: None))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]),
                                      timeout=5.0) as conn:
            conn.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %s\r\n\r\n{}"
                         % length.encode())
            assert conn.recv(64).startswith(b"HTTP/1.0 %d" % status)
    finally:
        server.shutdown()
        server.server_close()


def test_webhooks_ops_are_validated_and_need_webhooks() -> None:
    from actors.errors import NotFound
    from transport.engine_handler import EngineControlHandler
    from transport.errors import BadRequest
    from transport.ops import parse_request

    assert parse_request({"v": 1, "op": "webhooks_retry"}) == ("webhooks_retry",
                                                               {"name": None, "ids": []})
    assert parse_request({"v": 1, "op": "webhooks_log", "name": "ops", "limit": 5}) == (
        "webhooks_log", {"name": "ops", "limit": 5})
    bad_args: list[dict[str, Any]] = [{"ids": ["1"]}, {"ids": 3}, {"ids": [True]},
                                      {"name": 5}, {"ids": []}, {"name": "ops", "ids": []}]
    for bad in bad_args:
        with pytest.raises(BadRequest):
            parse_request({"v": 1, "op": "webhooks_retry", **bad})
    with pytest.raises(BadRequest):
        parse_request({"v": 1, "op": "webhooks_failed", "limit": 0})
    handler = EngineControlHandler(engine=None)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="no \\[\\[webhooks\\]\\] are configured"):
        handler.webhooks_failed(name=None, limit=10)


@given(value=st.text(max_size=60))
def test_retry_after_never_raises_and_is_never_negative(value: str) -> None:
    from actors.webhook_delivery import retry_after_s

    wait = retry_after_s(value, now=1_800_000_000.0)
    assert wait is None or wait >= 0


def test_retry_after_seconds_and_dates() -> None:
    from actors.webhook_delivery import retry_after_s

    assert retry_after_s("7", now=0.0) == 7.0
    assert retry_after_s("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert retry_after_s("soon", now=0.0) is None
