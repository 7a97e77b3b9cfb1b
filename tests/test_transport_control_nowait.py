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


def test_waiting_submits_hold_their_lane_and_never_block_halt(handler: NowaitHandler) -> None:
    srv = ControlServer(LOCAL, handler, max_pending=3)
    srv.start()
    client = Dealer(srv.endpoint)
    try:
        for i in range(4):
            client.send({**SUBMIT, "id": i})
        reply = client.recv()
        assert reply["id"] == 3 and reply["error"]["code"] == "overloaded"
        assert client.call({"v": 1, "op": "halt", "reason": "r", "id": "h"})["id"] == "h"
        for recording in handler.recordings:
            recording.finish()
        assert sorted(client.recv()["id"] for _ in range(3)) == [0, 1, 2]
        assert srv.stats()["pending_pool"] == 0
    finally:
        client.close()
        srv.stop()
