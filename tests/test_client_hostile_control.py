"""`ControlClient` against a control socket that answers garbage, late, twice or never: each
call returns the reply to its own request or raises one clear error (a `TransportError`,
`DaemonUnreachable` within its timeout, or the `ControlError` of the code), and the client
stays usable after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.hostile_daemon import Event, HostileDaemon, Replies, ok, pack
from transport.client import ControlClient, ControlError, DaemonUnreachable, TransportError
from transport.errors import InternalServerError, NotFoundError


@pytest.fixture
def daemon() -> Iterator[HostileDaemon]:
    d = HostileDaemon()
    yield d
    d.stop()


def always(*replies: tuple[float, bytes | list[bytes]]) -> Any:
    def responder(request: Event) -> Replies:
        return list(replies)
    return responder


def error(body: Any) -> bytes:
    return pack({"v": 1, "ok": False, "error": body})


GARBAGE = {
    "not msgpack": b"\xc1\xc1\xc1",
    "empty": b"",
    "truncated": ok({"pong": True})[:-2],
    "two objects": ok(1) + ok(2),
    "a list": pack([1, 2]),
    "an int": pack(7),
    "a map without ok": pack({"v": 1, "result": {"pong": True}}),
    "ok as a string": pack({"v": 1, "ok": "true", "result": {}}),
    "an error without its map": pack({"v": 1, "ok": False}),
    "an error that is a string": error("boom"),
    "an error without a code": error({"message": "m"}),
    "an error whose code is not a string": error({"code": ["x"], "message": {"a": 1}}),
    "invalid UTF-8": ok("\x01\x02").replace(b"\xa2\x01\x02", b"\xa2\xff\xfe"),
    "nested past msgpack's stack": b"\x91" * 100_000 + b"\xc0",
}


@pytest.mark.parametrize("body", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_reply_that_is_not_the_protocol_is_a_transport_error(
        daemon: HostileDaemon, body: bytes) -> None:
    with ControlClient(daemon.control, timeout=5.0) as client:
        daemon.responder = always((0, body))
        with pytest.raises(TransportError) as raised:
            client.ping()
        assert not isinstance(raised.value, DaemonUnreachable)
        daemon.responder = None
        assert client.ping() == {"pong": True}  # the same client goes on


def test_error_replies_with_odd_fields_raise_a_control_error(daemon: HostileDaemon) -> None:
    with ControlClient(daemon.control, timeout=5.0) as client:
        daemon.responder = always((0, error({"code": "no_such_code", "message": "m"})))
        with pytest.raises(ControlError) as raised:
            client.ping()
        assert type(raised.value) is ControlError and raised.value.code == "no_such_code"
        daemon.responder = always((0, error({"code": "internal", "message": {"a": 1}})))
        with pytest.raises(InternalServerError, match=r"\{'a': 1\}"):
            client.ping()
        daemon.responder = always((0, error({"code": "not_found", "message": "gone",
                                             "error_type": "NoSuchClass"})))
        with pytest.raises(NotFoundError):
            client.ping()


def test_a_reply_that_never_comes_is_unreachable_within_the_timeout(
        daemon: HostileDaemon) -> None:
    with ControlClient(daemon.control, timeout=0.5) as client:
        daemon.responder = always()
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable):
            client.status()
        assert time.monotonic() - started < 2.0


def test_a_reply_that_comes_after_the_timeout_never_answers_a_later_request(
        daemon: HostileDaemon) -> None:
    with ControlClient(daemon.control, timeout=0.3) as client:
        daemon.responder = always((1.0, ok("stale")))
        with pytest.raises(DaemonUnreachable):
            client.request("ping")
        # The fresh reply is due after the stale one: sent later on the same ROUTER.
        daemon.responder = always((1.0, ok("fresh")))
        assert client.request("ping", timeout=5.0) == "fresh"


def test_a_second_reply_to_one_request_never_answers_the_next(daemon: HostileDaemon) -> None:
    with ControlClient(daemon.control, timeout=5.0) as client:
        # The duplicate is due while the next request waits for its own reply.
        daemon.responder = always((0, ok("first")), (0.5, ok("duplicate")))
        assert client.request("ping") == "first"
        daemon.responder = always((1.0, ok("second")))
        assert client.request("ping") == "second"


def test_a_reply_of_several_frames_is_refused_and_the_client_goes_on(
        daemon: HostileDaemon) -> None:
    with ControlClient(daemon.control, timeout=5.0) as client:
        daemon.responder = always((0, [ok("one"), ok("two")]))
        with pytest.raises(TransportError):
            client.request("ping")
        daemon.responder = None
        assert client.ping() == {"pong": True}


@pytest.mark.parametrize("method,args,result", [
    ("status", (), None),
    ("status", (), [1, 2]),
    ("ping", (), "pong"),
    ("submit", ("wf",), 5),
    ("executions", (), {"a": 1}),
    ("replay", (1,), None),
])
def test_a_result_of_the_wrong_shape_is_a_transport_error(
        daemon: HostileDaemon, method: str, args: tuple[Any, ...], result: Any) -> None:
    with ControlClient(daemon.control, timeout=5.0) as client:
        daemon.responder = always((0, ok(result)))
        with pytest.raises(TransportError, match="not"):
            getattr(client, method)(*args)


@pytest.mark.timeout(30)  # the old client waited here for ever
def test_a_stale_reply_then_silence_is_unreachable_within_the_timeout(
        daemon: HostileDaemon) -> None:
    """The second reply to the first request comes while the next waits, and the next's own
    never does: the stale one is dropped, and the wait still ends at the timeout."""
    requests: list[Event] = []

    def once_twice_then_mute(request: Event) -> Replies:
        requests.append(request)
        return [(0, ok("first")), (0.5, ok("duplicate"))] if len(requests) == 1 else []

    with ControlClient(daemon.control, timeout=2.0) as client:
        daemon.responder = once_twice_then_mute
        assert client.request("ping") == "first"
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable):
            client.request("ping")
        assert 1.5 <= time.monotonic() - started < 10


def test_a_reply_over_the_frame_cap_is_dropped_with_its_connection(
        daemon: HostileDaemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """libzmq stops reading at `MAX_RECEIVED_FRAME_BYTES` (1 MiB here, 1 GiB for real):
    the client never buffers the rest, the call raises DaemonUnreachable within its timeout,
    and the next call, on a fresh socket, works."""
    monkeypatch.setattr("transport.control_client.MAX_RECEIVED_FRAME_BYTES", 1 << 20)
    huge = ok({"state": "NORMAL", "pad": "x" * (2 << 20)})
    daemon.responder = lambda request: [(0, huge)] if request.get("op") == "status" else None
    with ControlClient(daemon.control, timeout=1.0) as control:
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable):
            control.status()
        assert time.monotonic() - started < 5
        assert control.ping() == {"pong": True}


def test_the_frame_cap_is_above_the_largest_reply_a_daemon_sends() -> None:
    """A replay page stops past 16 MiB with one event more; an `execution` reply holds its
    inputs, its results and the outputs again in `nodes`, each cut at `[journal]
    max_event_bytes` (at most 256 MiB); msgpack framing adds a little."""
    from actors.journal_caps import MAX_EVENT_BYTES_RANGE
    from actors.journal_reads import MAX_REPLY_BYTES
    from transport.codec import MAX_RECEIVED_FRAME_BYTES

    largest_event = MAX_EVENT_BYTES_RANGE[1]
    largest_reply = max(MAX_REPLY_BYTES + largest_event, 3 * largest_event)
    assert largest_reply + (16 << 20) < MAX_RECEIVED_FRAME_BYTES
