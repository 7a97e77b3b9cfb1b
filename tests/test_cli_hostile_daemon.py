"""The real CLI (`status`, `tail`, `submit --wait`) against a daemon that answers garbage or
nothing: one line on stderr and a documented exit code, never a traceback or a hang."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_daemon import (
    EXECUTION_ID,
    Event,
    HostileDaemon,
    Replies,
    ok,
    pack,
    topic,
    workflow_event,
)

TRADELOOM = str(Path(sys.executable).with_name("tradeloom"))
RUN_S = 30.0


@pytest.fixture
def daemon() -> Iterator[HostileDaemon]:
    d = HostileDaemon()
    yield d
    d.stop()


def endpoints(d: HostileDaemon) -> list[str]:
    return ["--control", d.control, "--events", d.events, "--timeout", "2"]


def run(d: HostileDaemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRADELOOM, args[0], *endpoints(d), *args[1:]],
                          capture_output=True, text=True, timeout=RUN_S, check=False)


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("tradeloom: error: "), stderr
    assert "unexpected" not in lines[0], stderr
    return lines[0]


def for_op(op: str, *replies: tuple[float, bytes]) -> Any:
    def responder(request: Event) -> Replies | None:
        return list(replies) if request.get("op") == op else None
    return responder


@pytest.mark.parametrize("body", [b"\xc1 garbage", pack([1]), ok(None), ok([1, 2]),
                                  pack({"v": 1, "ok": False})])
def test_status_with_a_reply_that_is_not_the_protocol_exits_2(
        daemon: HostileDaemon, body: bytes) -> None:
    daemon.responder = for_op("status", (0, body))
    done = run(daemon, "status")
    one_error_line(done.stderr)
    assert done.returncode == 2


def test_status_with_no_reply_exits_3(daemon: HostileDaemon) -> None:
    daemon.responder = for_op("status")
    done = run(daemon, "status")
    assert "daemon unreachable" in one_error_line(done.stderr)
    assert done.returncode == 3


def test_submit_wait_whose_reply_has_no_execution_id_exits_2(daemon: HostileDaemon) -> None:
    daemon.responder = for_op("submit", (0, ok({"id": 5})))
    done = run(daemon, "submit", "wf", "--wait", "--wait-timeout", "5")
    assert "execution_id" in one_error_line(done.stderr)
    assert done.returncode == 2


def terminal_event(seq: int) -> Event:
    event = workflow_event(seq, kind="execution_completed")
    event.update(execution_id=EXECUTION_ID, correlation_id=EXECUTION_ID,
                 status="completed", results={"n": 1}, error_type=None)
    return event


def test_submit_wait_skips_garbage_and_reports_the_end(daemon: HostileDaemon) -> None:
    proc = subprocess.Popen([TRADELOOM, "submit", *endpoints(daemon), "wf", "--wait",
                             "--wait-timeout", "20"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        daemon.wait_requests(2, timeout=RUN_S)  # its ping, then its submit
        # The end as a failure, under a seq that is not one: taken, it would be the result.
        bad = dict(terminal_event(1), seq="1", type="execution_failed", status="failed",
                   error="bogus", error_type="NodeError")
        daemon.send_raw(topic(bad), pack(bad))
        daemon.send_raw(topic(bad), b"\xc1" * 1000)
        daemon.send_raw(topic(bad))
        daemon.publish(terminal_event(1))
        out, err = proc.communicate(timeout=RUN_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert out.splitlines()[0] == EXECUTION_ID
    assert out.splitlines()[1].startswith("completed in ")


def lines_of(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    """A queue of `proc`'s stdout lines, filled by a thread that ends at its EOF."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return lines, reader


def test_tail_skips_a_garbage_stream_and_stops_cleanly(daemon: HostileDaemon) -> None:
    proc = subprocess.Popen([TRADELOOM, "tail", *endpoints(daemon), "--json", "--since", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, reader = lines_of(proc)
    try:
        daemon.wait_requests(1, timeout=RUN_S)  # its status
        first = workflow_event(1)
        daemon.publish(first)  # comes live, or replayed (--since 1) if it subscribed later
        assert json.loads(lines.get(timeout=RUN_S))["seq"] == 1
        for frames in ([topic(first), b"\xc1"], [topic(first), pack(dict(first, seq=True))],
                       [topic(first), b"\x91" * 100_000 + b"\xc0"], [topic(first)]):
            daemon.send_raw(*frames)
        daemon.publish(workflow_event(2))
        assert json.loads(lines.get(timeout=RUN_S))["seq"] == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=RUN_S) == 0
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        reader.join(RUN_S)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize("result", [None, {"events": 5}])
def test_tail_whose_replay_reply_is_not_the_protocol_exits_2(
        daemon: HostileDaemon, result: Any) -> None:
    daemon.publish(workflow_event(1))
    daemon.responder = for_op("replay", (0, ok(result)))
    done = run(daemon, "tail", "--since", "1", "--json")
    assert "replay" in one_error_line(done.stderr)
    assert done.returncode == 2
