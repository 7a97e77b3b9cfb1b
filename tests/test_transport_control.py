"""The control server on real sockets: every op with REQ and DEALER clients, strict
validation, error codes by exception class, envelopes, concurrency, halt beside a slow
replay, overload."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import structlog
import structlog.testing
import zmq

from actors.errors import EngineStopped, Halted, LimitExceeded, NoJournal, NotFound, ResumeRefused
from tests.engine_journal_helpers import eventually
from tests.transport_fakes import FakeHandler, workflow_events
from transport import ControlServer, TransportError
from transport.client import (
    ControlClient,
    ControlError,
    HaltedError,
    InternalServerError,
    LimitExceededError,
    NotFoundError,
    UnknownWorkflowError,
)
from transport.codec import MAX_MESSAGE_BYTES
from transport.control import MAX_PEER_PENDING
from transport.peer_share import PeerShare

LOCAL = "tcp://127.0.0.1:*"


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def server(handler: FakeHandler) -> Iterator[ControlServer]:
    srv = ControlServer(LOCAL, handler)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ControlServer) -> Iterator[ControlClient]:
    with ControlClient(server.endpoint, timeout=5.0) as c:
        yield c


class Dealer:
    """A raw DEALER client: an empty delimiter frame, then the request."""

    def __init__(self, endpoint: str, *, delimiter: bool = True) -> None:
        self.sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.delimiter = delimiter

    def send(self, request: dict[str, Any]) -> None:
        body = msgpack.packb(request, use_bin_type=True)
        self.sock.send_multipart([b"", body] if self.delimiter else [body])

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        assert self.sock.poll(int(timeout * 1000)), "no reply"
        frames = self.sock.recv_multipart()
        if self.delimiter:
            assert frames[0] == b"" and len(frames) == 2
        reply: dict[str, Any] = msgpack.unpackb(frames[-1], raw=False)
        return reply

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.recv()

    def close(self) -> None:
        self.sock.close()


def raw_req(endpoint: str, frame: bytes, timeout: float = 5.0) -> dict[str, Any]:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.REQ)
    sock.linger = 0
    sock.connect(endpoint)
    try:
        sock.send(frame)
        assert sock.poll(int(timeout * 1000)), "no reply"
        reply: dict[str, Any] = msgpack.unpackb(sock.recv(), raw=False)
        return reply
    finally:
        sock.close()


# -- every op, both kinds of client ---------------------------------------------------------

def test_every_op_round_trips_through_the_client(client: ControlClient,
                                                 handler: FakeHandler) -> None:
    assert client.ping() == {"pong": True, "version": "9.9.9"}
    assert client.status()["state"] == "NORMAL"
    execution_id = client.submit("w", {"x": 1.5}, bot_id="b", strategy_id="s",
                                 priority=3)["execution_id"]
    assert handler.calls[-1] == ("submit", {"workflow": "w", "inputs": {"x": 1.5},
                                            "bot_id": "b", "strategy_id": "s", "priority": 3})
    assert client.execution(execution_id)["results"] == {"inputs": {"x": 1.5}}
    assert client.executions(workflow="w", status="completed", limit=5)[0][
        "execution_id"] == execution_id
    assert client.cancel(execution_id) == {"status": "completed"}
    assert client.alert("look") == {"state": "ALERT", "previous_state": "NORMAL"}
    assert client.reduce_only("trim") == {"state": "REDUCE_ONLY", "previous_state": "ALERT"}
    assert client.halt("stop") == {"state": "HALT", "previous_state": "REDUCE_ONLY"}
    assert handler.calls[-1] == ("halt", {"reason": "stop", "origin": "control"})
    assert client.resume(force=True) == {"state": "NORMAL", "previous_state": "HALT"}
    assert handler.calls[-1] == ("resume", {"reason": None, "force": True, "origin": "control"})
    [intent] = client.intents()
    assert client.resolve_intent(intent["idempotency_key"], "filled", note="checked") == {
        "idempotency_key": intent["idempotency_key"], "outcome": "filled"}
    assert client.intents() == [] and len(client.intents(unresolved=False)) == 1
    assert client.risk_update("daily_loss", value=50) == {
        "limit": "daily_loss", "value": 50.0, "utilization": 0.5}
    assert client.risk_update("daily_loss", delta=-10.0)["value"] == 40.0
    replay = client.replay(1)
    assert [e["seq"] for e in replay["events"]] == [1] and replay["next_seq"] == 2
    assert handler.calls[-1] == ("replay", {"since_seq": 1, "limit": 1000, "topic_prefix": ""})


@pytest.mark.parametrize(("request_", "result"), [
    ({"op": "ping"}, {"pong": True, "version": "9.9.9"}),
    ({"op": "halt", "reason": "r", "origin": "cli"}, {"state": "HALT", "previous_state": "NORMAL"}),
    ({"op": "alert", "reason": "r", "force": False}, {"state": "ALERT",
                                                      "previous_state": "NORMAL"}),
    ({"op": "reduce_only", "reason": "r"}, {"state": "REDUCE_ONLY",
                                            "previous_state": "NORMAL"}),
    ({"op": "resume"}, {"state": "NORMAL", "previous_state": "NORMAL"}),
    ({"op": "submit", "workflow": "w"}, {"execution_id": "exec_w_00000001"}),
    ({"op": "executions"}, []),
    ({"op": "intents", "unresolved": True}, None),
    ({"op": "risk_update", "limit": "daily_loss", "delta": 1}, {
        "limit": "daily_loss", "value": 1.0, "utilization": 0.01}),
    ({"op": "replay", "since_seq": 5, "limit": 10, "topic_prefix": "workflow/"}, {
        "events": [], "next_seq": 5, "last_seq": 0, "first_seq": 1}),
    ({"op": "status"}, None),
])
def test_every_op_round_trips_through_a_dealer(server: ControlServer,
                                               request_: dict[str, Any], result: Any) -> None:
    dealer = Dealer(server.endpoint)
    try:
        reply = dealer.call({"v": 1, **request_})
    finally:
        dealer.close()
    assert reply["v"] == 1 and reply["ok"] is True, reply
    if result is not None:
        assert reply["result"] == result


def test_not_found_ops_through_a_dealer(server: ControlServer) -> None:
    dealer = Dealer(server.endpoint)
    try:
        for request in ({"op": "execution", "execution_id": "exec_w_deadbeef"},
                        {"op": "cancel", "execution_id": "exec_w_deadbeef"},
                        {"op": "resolve_intent", "idempotency_key": "k", "outcome": "unknown"}):
            reply = dealer.call({"v": 1, **request})
            assert reply == {"v": 1, "ok": False, "error": {
                "code": "not_found", "message": reply["error"]["message"]}}
    finally:
        dealer.close()


def test_a_dealer_without_delimiter_and_request_ids(server: ControlServer) -> None:
    bare = Dealer(server.endpoint, delimiter=False)
    try:
        assert bare.call({"v": 1, "op": "ping", "id": 7})["id"] == 7
    finally:
        bare.close()
    dealer = Dealer(server.endpoint)
    try:
        reply = dealer.call({"v": 1, "op": "nope", "id": "abc"})
        assert reply["id"] == "abc" and reply["error"]["code"] == "unknown_op"
    finally:
        dealer.close()


# -- validation -----------------------------------------------------------------------------

def nested(depth: int, leaf: Any) -> Any:
    """`leaf` inside `depth` one-element lists."""
    for _ in range(depth):
        leaf = [leaf]
    return leaf


def test_inputs_deeper_than_the_events_keep_are_refused(server: ControlServer,
                                                         handler: FakeHandler) -> None:
    """63 levels (the map counted) are kept as they are; 64 would reach the events and the
    journal as a repr string: refused, not altered."""
    too_deep = msgpack.packb({"v": 1, "op": "submit", "workflow": "w",
                              "inputs": {"x": nested(63, 1)}}, use_bin_type=True)
    reply = raw_req(server.endpoint, too_deep)
    assert reply["ok"] is False and reply["error"] == {
        "code": "bad_request", "message": "field 'inputs' is nested deeper than 63 levels"}
    assert handler.calls == []
    deepest = msgpack.packb({"v": 1, "op": "submit", "workflow": "w",
                             "inputs": {"x": nested(62, 1)}}, use_bin_type=True)
    assert raw_req(server.endpoint, deepest)["ok"] is True


@pytest.mark.parametrize(("request_", "field"), [
    ({"op": "submit"}, "workflow"),
    ({"op": "submit", "workflow": 5}, "workflow"),
    ({"op": "submit", "workflow": ""}, "workflow"),
    ({"op": "submit", "workflow": "w", "inputs": [1]}, "inputs"),
    ({"op": "submit", "workflow": "w", "inputs": {"x": float("nan")}}, "inputs"),
    ({"op": "submit", "workflow": "w", "inputs": {"x": {"y": [float("inf")]}}}, "inputs"),
    # as deep as msgpack reads (the NaN check once stopped at 64 levels; such depth is
    # refused on its own now)
    ({"op": "submit", "workflow": "w", "inputs": {"x": nested(900, float("nan"))}}, "inputs"),
    ({"op": "submit", "workflow": "w", "inputs": {"x": nested(50, float("nan"))}}, "inputs"),
    ({"op": "submit", "workflow": "w",
      "inputs": {"x": nested(65, {"y": float("-inf")})}}, "inputs"),
    ({"op": "submit", "workflow": "w", "priority": True}, "priority"),
    ({"op": "submit", "workflow": "w", "priority": 1.0}, "priority"),
    ({"op": "submit", "workflow": "w", "bot_id": 1}, "bot_id"),
    ({"op": "execution"}, "execution_id"),
    ({"op": "executions", "limit": 0}, "limit"),
    ({"op": "executions", "limit": 10_001}, "limit"),
    ({"op": "executions", "status": "bogus"}, "status"),
    ({"op": "halt"}, "reason"),
    ({"op": "halt", "reason": 1}, "reason"),
    ({"op": "halt", "reason": "r", "origin": "engine"}, "origin"),
    ({"op": "alert", "reason": "r", "force": 1}, "force"),
    ({"op": "resume", "force": "yes"}, "force"),
    ({"op": "intents", "unresolved": 0}, "unresolved"),
    ({"op": "resolve_intent", "idempotency_key": "k", "outcome": "maybe"}, "outcome"),
    ({"op": "risk_update", "limit": "daily_loss"}, "value"),
    ({"op": "risk_update", "limit": "daily_loss", "value": 1, "delta": 1}, "value"),
    ({"op": "risk_update", "limit": "daily_loss", "value": float("nan")}, "value"),
    ({"op": "risk_update", "limit": "daily_loss", "delta": float("-inf")}, "delta"),
    ({"op": "risk_update", "limit": "daily_loss", "value": False}, "value"),
    ({"op": "replay"}, "since_seq"),
    ({"op": "replay", "since_seq": -1}, "since_seq"),
    ({"op": "replay", "since_seq": "1"}, "since_seq"),
    ({"op": "replay", "since_seq": 1, "limit": 10_001}, "limit"),
    ({"op": "replay", "since_seq": 1, "topic_prefix": b"workflow/"}, "topic_prefix"),
])
def test_ill_typed_fields_are_bad_requests_naming_the_field(
        server: ControlServer, handler: FakeHandler, request_: dict[str, Any],
        field: str) -> None:
    reply = raw_req(server.endpoint, msgpack.packb({"v": 1, **request_}, use_bin_type=True))
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
    assert repr(field) in reply["error"]["message"]
    assert handler.calls == []


@pytest.mark.parametrize(("frame", "code"), [
    (b"\xc1", "bad_request"),                                     # not msgpack
    (msgpack.packb([1, 2]), "bad_request"),                       # not a map
    (msgpack.packb({1: 2}), "bad_request"),                       # non-string keys
    (msgpack.packb({"op": "ping"}), "bad_request"),               # no v
    (msgpack.packb({"v": 2, "op": "ping"}), "bad_request"),       # another version
    (msgpack.packb({"v": True, "op": "ping"}), "bad_request"),    # True is not 1
    (msgpack.packb({"v": 1}), "bad_request"),                     # no op
    (msgpack.packb({"v": 1, "op": 3}), "bad_request"),
    (msgpack.packb({"v": 1, "op": "launch_missiles"}), "unknown_op"),
    (b"", "bad_request"),                                         # empty frame
])
def test_malformed_requests_get_an_error_reply(server: ControlServer, frame: bytes,
                                               code: str) -> None:
    reply = raw_req(server.endpoint, frame)
    assert reply["v"] == 1 and reply["ok"] is False and reply["error"]["code"] == code


def test_a_request_over_one_mib_gets_a_bad_request_reply(server: ControlServer) -> None:
    big = msgpack.packb({"v": 1, "op": "submit", "workflow": "w",
                         "inputs": {"blob": "x" * MAX_MESSAGE_BYTES}})
    reply = raw_req(server.endpoint, big)
    assert reply["error"]["code"] == "bad_request" and "byte limit" in reply["error"]["message"]
    assert raw_req(server.endpoint, msgpack.packb({"v": 1, "op": "ping"}))["ok"] is True


def test_wrong_frame_count_is_answered(server: ControlServer) -> None:
    dealer = Dealer(server.endpoint)
    try:
        dealer.sock.send_multipart([b"", msgpack.packb({"v": 1, "op": "ping"}), b"extra"])
        reply = dealer.recv()
        assert reply["error"]["code"] == "bad_request" and "one request frame" in reply[
            "error"]["message"]
        dealer.sock.send_multipart([b""])
        assert dealer.recv()["error"]["code"] == "bad_request"
    finally:
        dealer.close()


# -- error codes by class -------------------------------------------------------------------

@pytest.mark.parametrize(("raised", "code", "client_error"), [
    (NotFound("gone"), "not_found", NotFoundError),
    (Halted("in HALT"), "halted", HaltedError),
    (LimitExceeded("daily_loss"), "limit_exceeded", LimitExceededError),
    (ResumeRefused("old name"), "limit_exceeded", LimitExceededError),
    (ValueError("give one of value, delta"), "bad_request", ControlError),
    (EngineStopped("stopped"), "internal", InternalServerError),
    (KeyError("bug"), "internal", InternalServerError),
])
def test_handler_exceptions_map_to_codes_by_class(
        client: ControlClient, server: ControlServer, handler: FakeHandler,
        raised: BaseException, code: str, client_error: type[ControlError]) -> None:
    handler.fail_with = raised
    with pytest.raises(client_error) as info:
        client.halt("x")
    assert info.value.code == code
    handler.fail_with = None
    assert client.ping()["pong"] is True  # the server goes on
    if code == "internal":
        assert server.stats()["internal"] >= 1


@pytest.mark.parametrize(("raised", "event", "traceback"), [
    (EngineStopped("the engine is stopped"), "control_op_refused_stopping", False),
    (NoJournal("this engine keeps no journal"), "control_op_needs_journal", False),
    (KeyError("bug"), "control_op_failed", True),
])
def test_a_stop_under_way_is_logged_as_one_line_a_bug_with_its_traceback(
        client: ControlClient, handler: FakeHandler, raised: BaseException, event: str,
        traceback: bool) -> None:
    handler.fail_with = raised
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with structlog.testing.capture_logs() as logs, \
                pytest.raises(InternalServerError) as info:
            client.halt("x")
    finally:
        structlog.configure(**saved)
    assert type(raised).__name__ in str(info.value)
    [entry] = [e for e in logs if e["event"].startswith("control_op_")]
    assert entry["event"] == event and ("traceback" in entry) is traceback


def test_typed_client_errors_are_also_the_engine_classes(client: ControlClient,
                                                         handler: FakeHandler) -> None:
    with pytest.raises(UnknownWorkflowError):
        client.submit("nope")
    handler.state = "HALT"
    with pytest.raises(Halted):  # the in-process class catches the remote refusal
        client.submit("w")
    handler.limit_exceeded = True
    with pytest.raises(ResumeRefused):
        client.resume()
    with pytest.raises(NotFound):
        client.execution("exec_w_00000000")


# -- concurrency ----------------------------------------------------------------------------

def test_twenty_concurrent_clients(server: ControlServer, handler: FakeHandler) -> None:
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            with ControlClient(server.endpoint, timeout=10.0) as c:
                for i in range(10):
                    assert c.ping()["pong"] is True
                    execution_id = c.submit("w", {"client": n, "i": i})["execution_id"]
                    assert c.execution(execution_id)["results"]["inputs"] == {
                        "client": n, "i": i}
                    with lock:
                        ids.append(execution_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(ids)) == 200 and len(handler.executions_by_id) == 200


def test_halt_is_answered_while_other_clients_run_slow_replays(
        server: ControlServer, handler: FakeHandler) -> None:
    handler.log.append(workflow_events("w", 10_000))
    handler.replay_gate = threading.Event()
    busy = Dealer(server.endpoint)
    try:
        for i in range(6):  # more slow replays than the pool has workers
            busy.send({"v": 1, "op": "replay", "since_seq": 1, "limit": 10_000, "id": i})
        assert handler.replay_started.wait(10)
        with ControlClient(server.endpoint, timeout=5.0) as c:
            started = time.monotonic()
            assert c.halt("now")["state"] == "HALT"
            elapsed = time.monotonic() - started
            assert c.status()["state"] == "HALT"
        assert not busy.sock.poll(0)  # no replay has answered: halt did not wait for them
        assert elapsed < 2.0  # generous on a shared machine; bench/ holds the 50 ms bound
        handler.replay_gate.set()
        replies = [busy.recv(20) for _ in range(6)]
    finally:
        handler.replay_gate.set()
        busy.close()
    assert sorted(r["id"] for r in replies) == list(range(6))
    assert all(len(r["result"]["events"]) == 10_000 for r in replies)


def test_one_peer_gets_its_share_of_the_workers_and_the_rest_waits_its_turn(
        server: ControlServer, handler: FakeHandler) -> None:
    # One DEALER pipelining 600 replays once held every other client's `execution` behind
    # all of them (tens of seconds). Now at most MAX_PEER_PENDING of one connection's slow
    # requests are with the workers; the others wait in its own queue, not refused.
    handler.replay_gate = threading.Event()
    greedy, other = Dealer(server.endpoint), Dealer(server.endpoint)
    extra = 8
    try:
        for i in range(MAX_PEER_PENDING + extra):
            greedy.send({"v": 1, "op": "replay", "since_seq": 1, "id": i})
        deadline = time.monotonic() + 5.0
        while server.stats()["parked"] < extra:  # read, the last `extra` waiting their turn
            assert time.monotonic() < deadline, server.stats()
            time.sleep(0.005)
        assert server.stats()["overloaded"] == 0
        for _ in range(3 * MAX_PEER_PENDING):  # quick ops never wait behind them
            greedy.send({"v": 1, "op": "ping"})
        assert all(greedy.recv()["ok"] for _ in range(3 * MAX_PEER_PENDING))
        other.send({"v": 1, "op": "replay", "since_seq": 1, "id": "mine"})
        assert not other.sock.poll(100)  # queued behind the greedy's share only
        handler.replay_gate.set()
        assert other.recv()["ok"] is True
        answered = [greedy.recv() for _ in range(MAX_PEER_PENDING + extra)]
        assert all(r["ok"] for r in answered)
        assert sorted(r["id"] for r in answered) == list(range(MAX_PEER_PENDING + extra))
        assert server.stats()["parked"] == 0
    finally:
        handler.replay_gate.set()
        greedy.close()
        other.close()


def admit(share: PeerShare, peer: bytes, job: str) -> bool | None:
    """As the control server does: True, started; False, parked; None, refused."""
    if share.must_wait(peer):
        return False if share.park(peer, job) else None
    share.start(peer)
    return True


def test_a_peers_waiting_requests_go_on_in_order_one_per_answer() -> None:
    share = PeerShare(2, max_parked=2, max_parked_total=3)
    assert admit(share, b"a", "a1") and admit(share, b"a", "a2")
    assert admit(share, b"a", "a3") is False and admit(share, b"a", "a4") is False
    assert admit(share, b"a", "a5") is None, "its own queue is full"
    assert admit(share, b"b", "b1"), "another peer has its own share"
    assert admit(share, b"b", "b2") and admit(share, b"b", "b3") is False
    assert admit(share, b"b", "b4") is None, "all queues together are full"
    assert share.parked == 3
    assert share.done(b"a") == "a3"  # takes the answered one's place
    assert share.done(b"a") == "a4"
    assert share.done(b"a") is None and share.done(b"a") is None
    assert share.parked == 1
    assert admit(share, b"a", "a6") and admit(share, b"a", "a7"), "its share is back"
    assert admit(share, b"a", "a8") is False


def test_a_peers_waiting_requests_do_not_crowd_out_other_clients(
        handler: FakeHandler) -> None:
    """Only requests with the workers count against max_pending: one DEALER's backlog
    once filled it, and every other client's submit, cancel and execution were refused
    `overloaded`. A backlog past its own bound is refused to that connection only."""
    srv = ControlServer(LOCAL, handler, max_pending=MAX_PEER_PENDING + 4)
    srv.start()
    handler.replay_gate = threading.Event()
    greedy, other = Dealer(srv.endpoint), Dealer(srv.endpoint)
    waiting = 256  # PeerShare's default max_parked
    try:
        for i in range(MAX_PEER_PENDING + waiting + 3):
            greedy.send({"v": 1, "op": "replay", "since_seq": 1, "id": i})
        refused = [greedy.recv() for _ in range(3)]
        assert [(r["id"], r["error"]["code"]) for r in refused] == [
            (MAX_PEER_PENDING + waiting + i, "overloaded") for i in range(3)]
        assert "this connection" in refused[0]["error"]["message"]
        assert srv.stats()["parked"] == waiting
        other.send({"v": 1, "op": "execution", "execution_id": "exec_w_00000001", "id": "x"})
        other.send({"v": 1, "op": "replay", "since_seq": 1, "id": "mine"})
        handler.replay_gate.set()
        answers = {r["id"]: r for r in (other.recv(), other.recv())}
        assert answers["mine"]["ok"] is True
        assert answers["x"].get("error", {}).get("code") != "overloaded"
        answered = [greedy.recv(30) for _ in range(MAX_PEER_PENDING + waiting)]
        assert sorted(r["id"] for r in answered) == list(range(MAX_PEER_PENDING + waiting))
        assert all(r["ok"] for r in answered)
        assert srv.stats()["parked"] == 0 and srv.stats()["pending_pool"] == 0
    finally:
        handler.replay_gate.set()
        greedy.close()
        other.close()
        srv.stop()


def test_a_peer_that_never_reads_its_replies_gets_overloaded_not_more_memory(
        handler: FakeHandler) -> None:
    # Without a bound libzmq queued up to 10,000 replies for it: a GB of replays or more.
    handler.log.append(workflow_events("w", 2000))  # each replay: about 400 KB
    srv = ControlServer(LOCAL, handler, max_peer_unread_bytes=256 * 1024)
    srv.start()
    mute: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    mute.linger, mute.rcvhwm = 0, 1
    mute.setsockopt(zmq.RCVBUF, 4096)  # the kernel holds little for it either
    mute.connect(srv.endpoint)
    deadline = time.monotonic() + 20.0
    try:
        sent = 0
        while srv.stats()["overloaded"] == 0:
            assert time.monotonic() < deadline and sent < 500, (
                f"{sent} replays sent unread, none refused: {srv.stats()}")
            mute.send_multipart([b"", msgpack.packb({"v": 1, "op": "replay", "since_seq": 1,
                                                     "id": sent})])
            sent += 1
            while srv.stats()["replies"] < sent:  # each answered before the next
                assert time.monotonic() < deadline, f"no reply to {sent}: {srv.stats()}"
                time.sleep(0.005)
        with ControlClient(srv.endpoint, timeout=5.0) as other:  # others are served
            assert len(other.replay(1)["events"]) == 1000
        replies: list[dict[str, Any]] = []
        while len(replies) < sent:  # now read: every request got its one reply
            assert mute.poll(5000), f"{len(replies)} of {sent} replies"
            replies.append(msgpack.unpackb(mute.recv_multipart()[-1], raw=False))
        refused = [r for r in replies if not r["ok"]]
        assert refused and all(r["error"]["code"] == "overloaded" for r in refused)
        assert sorted(r["id"] for r in replies) == list(range(sent))
        mute.send_multipart([b"", msgpack.packb({"v": 1, "op": "replay", "since_seq": 1})])
        assert mute.poll(5000)  # read up: served again
        assert msgpack.unpackb(mute.recv_multipart()[-1], raw=False)["ok"] is True
    finally:
        mute.close()
        srv.stop()


def test_a_full_lane_makes_a_connection_with_work_in_progress_wait_its_turn(
        handler: FakeHandler) -> None:
    srv = ControlServer(LOCAL, handler, workers=1, max_pending=2)
    srv.start()
    handler.replay_gate = threading.Event()
    dealer = Dealer(srv.endpoint)
    try:
        for i in range(3):
            dealer.send({"v": 1, "op": "replay", "since_seq": 1, "id": i})
        eventually(lambda: srv.stats()["parked"] == 1, 10.0, "the third waiting its turn")
        assert srv.stats()["pending_pool"] == 2 and srv.stats()["overloaded"] == 0
        assert dealer.call({"v": 1, "op": "halt", "reason": "r"})["ok"] is True
        handler.replay_gate.set()
        assert sorted(dealer.recv()["id"] for _ in range(3)) == [0, 1, 2]
    finally:
        handler.replay_gate.set()
        dealer.close()
        srv.stop()


def test_a_risk_feeds_burst_never_gets_an_operators_halt_refused(
        handler: FakeHandler) -> None:
    """A connection pipelining risk updates once filled the urgent lane's count, and a
    `tradeloom halt` from another was answered `overloaded` (5 of 5 in a probe). Now the
    burst waits its turn, past its bound it alone is refused, and the halt goes through."""
    srv = ControlServer(LOCAL, handler, max_pending=4)
    srv.start()
    handler.risk_gate = threading.Event()
    feed, operator = Dealer(srv.endpoint), Dealer(srv.endpoint)
    burst = 4 + 256 + 5  # the lane's count, the feed's own queue, and past it
    try:
        for i in range(burst):
            feed.send({"v": 1, "op": "risk_update", "limit": "daily_loss", "value": 1.0,
                       "id": i})
        refused = [feed.recv() for _ in range(5)]
        assert [(r["id"], r["error"]["code"]) for r in refused] == [
            (4 + 256 + i, "overloaded") for i in range(5)]
        operator.send({"v": 1, "op": "halt", "reason": "operator", "id": "halt"})
        eventually(lambda: srv.stats()["pending_urgent"] == 5, 10.0, "the halt admitted")
        handler.risk_gate.set()
        assert operator.recv(20) == {"v": 1, "ok": True, "id": "halt",
                                     "result": {"state": "HALT", "previous_state": "NORMAL"}}
        answered = [feed.recv(20) for _ in range(4 + 256)]
        assert sorted(r["id"] for r in answered) == list(range(4 + 256))
        assert all(r["ok"] for r in answered)
    finally:
        handler.risk_gate.set()
        feed.close()
        operator.close()
        srv.stop()


def test_many_busy_connections_never_crowd_out_one_with_nothing_in_progress(
        handler: FakeHandler) -> None:
    """63 connections with 16 replays each passed the 1,000 the lane allows, and every
    other client's query was refused `overloaded`."""
    srv = ControlServer(LOCAL, handler, max_pending=8)
    srv.start()
    handler.replay_gate = threading.Event()
    busy = [Dealer(srv.endpoint) for _ in range(6)]
    other = Dealer(srv.endpoint)
    try:
        for i, dealer in enumerate(busy):
            for j in range(20):
                dealer.send({"v": 1, "op": "replay", "since_seq": 1, "id": f"{i}.{j}"})
        eventually(lambda: srv.stats()["parked"] == 6 * 20 - srv.stats()["pending_pool"],
                   10.0, "every busy connection's requests in progress or waiting")
        in_progress = srv.stats()["pending_pool"]
        assert in_progress >= 8  # the lane is full: a busy connection's next one waits
        other.send({"v": 1, "op": "execution", "execution_id": "exec_w_00000001", "id": "x"})
        eventually(lambda: srv.stats()["pending_pool"] == in_progress + 1, 10.0,
                   "the query admitted")
        assert srv.stats()["overloaded"] == 0
        handler.replay_gate.set()
        assert other.recv(20)["id"] == "x"
        for i, dealer in enumerate(busy):
            assert sorted(dealer.recv(20)["id"] for _ in range(20)) == sorted(
                f"{i}.{j}" for j in range(20))
    finally:
        handler.replay_gate.set()
        for dealer in (*busy, other):
            dealer.close()
        srv.stop()


def test_a_port_in_use_fails_start(server: ControlServer) -> None:
    with pytest.raises(TransportError, match="cannot bind the control on"):
        ControlServer(server.endpoint, FakeHandler()).start()
