"""The control server when the OS refuses a new thread (`can't start new thread`): each
lane has its first worker from the start, so the kill switch never waits for a thread; a
request whose lane cannot add a worker waits for one it has, and the failure is one line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.transport_fakes import FakeHandler
from transport import ControlServer
from transport.client import ControlClient

LOCAL = "tcp://127.0.0.1:*"
DEADLINE_S = 5.0


class ControlThreadLimit:
    """`threading.Thread.start` refusing the control server's worker threads while
    `refusing` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refusing = threading.Event()
        self.refused = 0
        self.tried = threading.Event()  # set on the first refusal
        real_start = threading.Thread.start

        def start(thread: threading.Thread) -> None:
            if self.refusing.is_set() and thread.name.startswith("tradeloom-control"):
                self.refused += 1
                self.tried.set()
                raise RuntimeError("can't start new thread")
            real_start(thread)

        monkeypatch.setattr(threading.Thread, "start", start)


@pytest.fixture
def limit(monkeypatch: pytest.MonkeyPatch) -> ControlThreadLimit:
    return ControlThreadLimit(monkeypatch)


@pytest.fixture
def handler() -> FakeHandler:
    return FakeHandler()


@pytest.fixture
def server(handler: FakeHandler, limit: ControlThreadLimit) -> Iterator[ControlServer]:
    srv = ControlServer(LOCAL, handler, workers=2)
    srv.start()
    limit.refusing.set()  # from its first request on: no new thread
    yield srv
    limit.refusing.clear()
    srv.stop()


class InThread:
    """One control request on a thread of its own, with a client of its own."""

    def __init__(self, endpoint: str, op: str, **args: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(endpoint, op, args),
                                       daemon=True)
        self.thread.start()

    def _run(self, endpoint: str, op: str, args: dict[str, Any]) -> None:
        try:
            with ControlClient(endpoint, timeout=DEADLINE_S) as client:
                self.result = client.request(op, **args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc

    def answered(self) -> Any:
        self.thread.join(DEADLINE_S + 1)
        assert not self.thread.is_alive() and self.error is None, self.error
        return self.result


def test_the_first_halt_is_answered_with_no_thread_to_be_had(server: ControlServer) -> None:
    with ControlClient(server.endpoint, timeout=DEADLINE_S) as client:
        assert client.halt("threads short")["state"] == "HALT"


def test_a_request_its_lane_cannot_add_a_worker_for_waits_for_one_it_has(
        server: ControlServer, handler: FakeHandler, limit: ControlThreadLimit) -> None:
    with ControlClient(server.endpoint, timeout=DEADLINE_S) as client:
        client.executions()  # the pool lane's worker is there, with no new thread
        handler.replay_gate = threading.Event()
        with capture_logs() as logs:
            slow = InThread(server.endpoint, "replay", since_seq=1)
            assert handler.replay_started.wait(DEADLINE_S)  # its one worker is busy in it
            waiting = InThread(server.endpoint, "executions")  # a second worker: refused
            assert limit.tried.wait(DEADLINE_S)
            handler.replay_gate.set()
            waiting.answered()
            slow.answered()
        assert limit.refused == 1
        assert [line["event"] for line in logs if line["log_level"] == "error"] == [
            "control_worker_start_failed"]
        client.executions()
    assert server.stats()["pending_pool"] == 0
