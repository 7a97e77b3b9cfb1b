"""`tradeloom submit` against a control socket that answers slowly: `--timeout` bounds
reaching the daemon (a `ping`), not the submit's reply, which the daemon holds until the
execution's record is committed (up to 10 s on a slow disk). A late reply is a success, not
"unreachable" (an operator told "unreachable" submits again: two orders); a daemon that does
not answer the ping is never sent the submit; a submit whose reply never comes says the
daemon may have accepted it.

The daemon here is a stand-in: a thread owning a ROUTER socket on 127.0.0.1 that answers
each op after the delay the test gives it (a real daemon's disk cannot be slowed on cue).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from transport.client import ControlClient
from transport.codec import encode
from transport.errors import DaemonUnreachable

#: op -> seconds before its reply; an op not listed is never answered.
Delays = dict[str, float]


class SlowControl:
    """A control socket that answers `ping` and `submit` after set delays."""

    def __init__(self, delays: Delays) -> None:
        self.delays = delays
        self.received: list[str] = []
        self._stop = threading.Event()
        self._bound = threading.Event()
        self.endpoint = ""
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> SlowControl:
        self._thread.start()
        assert self._bound.wait(5), "the stand-in control socket did not bind"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _serve(self) -> None:  # the socket lives and dies in this thread
        socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.ROUTER)
        socket.setsockopt(zmq.LINGER, 0)
        try:
            port = socket.bind_to_random_port("tcp://127.0.0.1")
            self.endpoint = f"tcp://127.0.0.1:{port}"
            self._bound.set()
            due: list[tuple[float, list[bytes]]] = []
            while not self._stop.is_set():
                if socket.poll(10, zmq.POLLIN):
                    *envelope, payload = socket.recv_multipart()
                    op = msgpack.unpackb(payload, raw=False)["op"]
                    self.received.append(op)
                    if op in self.delays:
                        result: Any = ({"pong": True} if op == "ping"
                                       else {"execution_id": "exec_slow_0000e510"})
                        due.append((time.monotonic() + self.delays[op],
                                    [*envelope, encode({"v": 1, "ok": True, "result": result})]))
                now = time.monotonic()
                for entry in [entry for entry in due if entry[0] <= now]:
                    due.remove(entry)
                    socket.send_multipart(entry[1])
        finally:
            socket.close()


@pytest.fixture
def slow_control(request: pytest.FixtureRequest) -> Iterator[SlowControl]:
    with SlowControl(request.param) as control:
        yield control


def cli_submit(endpoint: str, timeout: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "submit", "wf", "--control",
                           endpoint, "--timeout", timeout], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    return proc, time.monotonic() - started


@pytest.mark.parametrize("slow_control", [{"ping": 0.0, "submit": 1.5}], indirect=True)
def test_a_submit_reply_later_than_timeout_is_a_success_sent_once(
        slow_control: SlowControl) -> None:
    proc, _ = cli_submit(slow_control.endpoint, "0.5")
    assert (proc.returncode, proc.stdout.strip()) == (0, "exec_slow_0000e510"), proc.stderr
    assert slow_control.received == ["ping", "submit"]


@pytest.mark.parametrize("slow_control", [{}], indirect=True)
def test_a_daemon_not_answering_the_ping_is_never_sent_the_submit(
        slow_control: SlowControl) -> None:
    proc, took = cli_submit(slow_control.endpoint, "0.5")
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "unreachable" in proc.stderr, proc.stderr
    assert "the submit was not sent" in proc.stderr
    assert took < 10, took  # bounded by --timeout (0.5 s) plus the CLI's start-up
    assert slow_control.received == ["ping"]


@pytest.mark.parametrize("slow_control", [{"ping": 0.0}], indirect=True)
def test_a_submit_never_answered_says_it_may_have_been_accepted(
        slow_control: SlowControl) -> None:
    with ControlClient(slow_control.endpoint, timeout=0.3) as control:
        assert control.ping() == {"pong": True}
        with pytest.raises(DaemonUnreachable, match="may have accepted it"):
            control.submit("wf")
        with pytest.raises(DaemonUnreachable) as other:
            control.status()  # a question, not a submit: nothing to warn of
    assert "accepted" not in str(other.value)
    assert slow_control.received == ["ping", "submit", "status"]
