"""The control server's `submit` without a worker (`ops.NowaitSubmit`): started on the socket
thread, answered when the journal's commit calls back, never before; an `internal` error when
the record fails or is not committed in time; one reply per request whatever the order."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from actors.errors import Halted
from tests.engine_journal_helpers import eventually
from tests.test_transport_control import Dealer
from tests.transport_fakes import FakeHandler
from transport import ControlServer
from transport.ops import DeferredReply

LOCAL = "tcp://127.0.0.1:*"
SUBMIT = {"v": 1, "op": "submit", "workflow": "w"}


class FakeRecording:
    """A `Recording` completed by the test (the journal's Ticket in the daemon)."""

    def __init__(self) -> None:
        self.done = False
        self.error: BaseException | None = None
        self._callbacks: list[Callable[[Any], None]] = []
        self._event = threading.Event()
        self._lock = threading.Lock()

    def add_done_callback(self, fn: Callable[[Any], None], /) -> None:
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        fn(self)

    def wait(self, timeout: float | None = None) -> bool:
        self._event.wait(timeout)
        return self.done

    def finish(self, error: BaseException | None = None) -> None:
        """Complete from another thread, as the journal writer does after a commit."""
        def run() -> None:
            with self._lock:
                self.done, self.error = error is None, error
                self._event.set()
                callbacks, self._callbacks = self._callbacks, []
            for fn in callbacks:
                fn(self)
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(5)


class NowaitHandler(FakeHandler):
    def __init__(self) -> None:
        super().__init__()
        self.recordings: list[FakeRecording] = []
        self.threads: list[str] = []
        self.timeout_s = 30.0
        self.refuse: Exception | None = None

    def submit_nowait(self, *, workflow: str, inputs: dict[str, Any], bot_id: str | None,
                      strategy_id: str | None,
                      priority: int) -> dict[str, Any] | DeferredReply:
        self.threads.append(threading.current_thread().name)
        if self.refuse is not None:
            raise self.refuse
        result = self.submit(workflow=workflow, inputs=inputs, bot_id=bot_id,
                             strategy_id=strategy_id, priority=priority)
        if workflow == "unjournaled":
            return result
        recording = FakeRecording()
        self.recordings.append(recording)
        return DeferredReply(result, recording, self.timeout_s, result["execution_id"])


@pytest.fixture
def handler() -> NowaitHandler:
    handler = NowaitHandler()
    handler.workflows = [*handler.workflows, "unjournaled"]
    return handler


@pytest.fixture
def server(handler: NowaitHandler) -> Iterator[ControlServer]:
    srv = ControlServer(LOCAL, handler, max_pending=50)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def dealer(server: ControlServer) -> Iterator[Dealer]:
    client = Dealer(server.endpoint)
    yield client
    client.close()


def _wait_recordings(handler: NowaitHandler, count: int) -> None:
    eventually(lambda: len(handler.recordings) >= count, 5.0, "the submits to arrive")


def test_the_reply_waits_for_the_commit_and_runs_on_the_socket_thread(
        handler: NowaitHandler, dealer: Dealer, server: ControlServer) -> None:
    dealer.send({**SUBMIT, "id": 7})
    _wait_recordings(handler, 1)
    assert handler.threads == ["tradeloom-control"]  # not a worker: no hop and back
    assert dealer.sock.poll(200) == 0, "answered before the record was committed"
    handler.recordings[0].finish()
    reply = dealer.recv()
    assert reply["ok"] is True and reply["id"] == 7
    assert reply["result"]["execution_id"].startswith("exec_w_")
    assert server.stats()["pending_pool"] == 0


def test_commits_in_any_order_answer_each_request_once(handler: NowaitHandler,
                                                       dealer: Dealer) -> None:
    for i in range(20):
        dealer.send({**SUBMIT, "id": i})
    _wait_recordings(handler, 20)
    for recording in reversed(handler.recordings):
        recording.finish()
    replies = [dealer.recv() for _ in range(20)]
    assert sorted(r["id"] for r in replies) == list(range(20))
    assert len({r["result"]["execution_id"] for r in replies}) == 20
    assert dealer.sock.poll(100) == 0


def test_without_a_journal_the_reply_is_immediate(handler: NowaitHandler,
                                                  dealer: Dealer) -> None:
    reply = dealer.call({**SUBMIT, "workflow": "unjournaled"})
    assert reply["ok"] is True and handler.recordings == []


def test_a_failed_record_is_answered_internal(handler: NowaitHandler, dealer: Dealer,
                                              server: ControlServer) -> None:
    dealer.send(SUBMIT)
    _wait_recordings(handler, 1)
    handler.recordings[0].finish(OSError("disk full"))
    reply = dealer.recv()
    assert reply["error"]["code"] == "internal"
    assert "could not be committed" in reply["error"]["message"]
    assert "disk full" in reply["error"]["message"]
    assert server.stats()["internal"] == 1 and server.stats()["pending_pool"] == 0


def test_no_commit_in_time_is_answered_internal_once(handler: NowaitHandler, dealer: Dealer,
                                                     server: ControlServer) -> None:
    handler.timeout_s = 0.3
    dealer.send({**SUBMIT, "id": "late"})
    reply = dealer.recv()
    assert reply["id"] == "late" and reply["error"]["code"] == "internal"
    assert "not committed within 0.3 s" in reply["error"]["message"]
    handler.recordings[0].finish()  # the commit comes after all: no second reply
    assert dealer.call({"v": 1, "op": "ping", "id": "after"})["id"] == "after"
    assert dealer.sock.poll(100) == 0
    assert server.stats()["pending_pool"] == 0


def test_a_refused_submit_gets_its_error_code(handler: NowaitHandler, dealer: Dealer) -> None:
    handler.refuse = Halted("submit refused: the engine is in HALT")
    assert dealer.call(SUBMIT)["error"]["code"] == "halted"
    handler.refuse = RuntimeError("boom")
    reply = dealer.call(SUBMIT)
    assert reply["error"]["code"] == "internal" and "boom" in reply["error"]["message"]
    handler.refuse = None
    assert dealer.call({"v": 1, "op": "ping"})["ok"] is True


def test_submits_past_max_pending_wait_their_turn_in_order_and_never_block_halt(
        handler: NowaitHandler) -> None:
    """Past `max_pending` awaiting their commit, a connection's next submits wait (not
    started, not refused: the queue has room) and go on in order as earlier ones are
    answered; a halt meanwhile is answered at once."""
    srv = ControlServer(LOCAL, handler, max_pending=3)
    srv.start()
    client = Dealer(srv.endpoint)
    try:
        for i in range(5):
            client.send({**SUBMIT, "id": i})
        _wait_recordings(handler, 3)
        assert client.call({"v": 1, "op": "halt", "reason": "r", "id": "h"})["id"] == "h"
        assert client.call({"v": 1, "op": "resume", "id": "r"})["id"] == "r"
        assert len(handler.recordings) == 3 and srv.stats()["parked"] == 2
        handler.recordings[0].finish()
        assert client.recv()["id"] == 0
        _wait_recordings(handler, 4)  # the first waiting one took its place
        for recording in handler.recordings[1:]:
            recording.finish()
        _wait_recordings(handler, 5)
        handler.recordings[4].finish()
        replies = [client.recv() for _ in range(4)]
        assert [r["id"] for r in replies] == [1, 2, 3, 4]
        assert all(r["ok"] for r in replies)
        assert srv.stats()["pending_submits"] == 0 and srv.stats()["parked"] == 0
    finally:
        client.close()
        srv.stop()


def test_a_connection_past_its_waiting_submits_bound_is_refused_alone(
        handler: NowaitHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("transport.control_submits.MAX_PARKED_SUBMITS", 2)
    srv = ControlServer(LOCAL, handler, max_pending=2)
    srv.start()
    greedy, other = Dealer(srv.endpoint), Dealer(srv.endpoint)
    try:
        for i in range(5):  # 2 awaiting their commit, 2 waiting their turn, 1 too many
            greedy.send({**SUBMIT, "id": i})
        reply = greedy.recv()
        assert reply["id"] == 4 and reply["error"]["code"] == "overloaded"
        other.send({**SUBMIT, "id": "o"})  # nothing of its own in progress: it goes through
        _wait_recordings(handler, 3)
        for recording in handler.recordings[:3]:
            recording.finish()
        assert other.recv()["id"] == "o"
        _wait_recordings(handler, 4)
        handler.recordings[3].finish()
        _wait_recordings(handler, 5)
        handler.recordings[4].finish()
        assert [greedy.recv()["id"] for _ in range(4)] == [0, 1, 2, 3]
    finally:
        greedy.close()
        other.close()
        srv.stop()


def test_thousands_of_waiting_submits_refused_at_once_are_answered_without_recursion(
        handler: NowaitHandler) -> None:
    """Each answered submit starts the next waiting one; refused at once, that would recurse
    once per waiting submit (a loop does it)."""
    srv = ControlServer(LOCAL, handler, max_pending=1)
    srv.start()
    client = Dealer(srv.endpoint)
    try:
        client.send({**SUBMIT, "id": 0})
        _wait_recordings(handler, 1)
        for i in range(1, 3001):
            client.send({**SUBMIT, "id": i})
        eventually(lambda: srv.stats()["parked"] == 3000, 10.0, "3,000 waiting submits")
        handler.refuse = Halted("submit refused: the engine is in HALT")
        handler.recordings[0].finish()
        replies = [client.recv() for _ in range(3001)]
        assert [r["id"] for r in replies] == list(range(3001))
        assert {r["error"]["code"] for r in replies[1:]} == {"halted"}
        assert srv.stats()["pending_submits"] == 0 and srv.stats()["parked"] == 0
    finally:
        client.close()
        srv.stop()
