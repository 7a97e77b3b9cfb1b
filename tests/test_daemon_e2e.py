"""End to end with the real daemon as a subprocess: the event stream followed from another
process (every event, late joiners, slow subscribers, restarts), many control clients at
once, `halt` beside big replays, and a Node.js client written from docs/protocol.md.

Every daemon runs `tradeloom daemon --config FILE` on free 127.0.0.1 ports with its own
data_dir (tests/daemon_fixture.py); subscribers are tests/e2e_subscriber.py processes on the
client library's `Subscriber`."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from tests.conftest import NODE_DIR
from tests.daemon_fixture import (
    DaemonFleet,
    check_stream,
    replay_all,
    submit_many,
    wait_ended,
    wait_last_seq,
    wait_until,
)
from tests.e2e_workflows import WIDE_NODES
from transport.codec import encode

#: Events of one `wide` execution: started, 2 per node, a progress per node but the last,
#: completed.
WIDE_EVENTS = 1 + 2 * WIDE_NODES + (WIDE_NODES - 1) + 1


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[DaemonFleet]:
    with DaemonFleet(tmp_path) as fleet:
        yield fleet


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_outside_subscriber_receives_every_event_of_1000_executions(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    subscriber = fleet.subscriber(daemon)
    live = subscriber.wait_live()
    ids = submit_many(daemon, "fast", 1000)
    subscriber.wait_terminals(1000)
    with daemon.client() as control:
        statuses = wait_ended(control, ids)
        last = control.status()["last_seq"]
        journal = replay_all(control)
    summary = subscriber.finish(last, timeout=60)
    check_stream(summary, live["last_seq"] + 1, last)
    assert set(statuses.values()) == {"completed"}
    assert {i: summary["terminals"].get(i) for i in ids} == dict.fromkeys(ids, "completed")
    assert summary["types"]["execution_started"] == 1000
    # Everything the subscriber saw is what the journal holds, seq for seq.
    assert [e["seq"] for e in journal] == list(range(1, last + 1))
    assert summary["gaps_filled"] == 0 and summary["lost"] == 0
    assert daemon.terminate() == 0


def test_a_late_joiner_replays_from_seq_1_and_continues_live(fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    before = submit_many(daemon, "fast", 200)
    with daemon.client() as control:
        wait_ended(control, before)
        joined_at = wait_last_seq(control, 1 + 200 * 4)  # daemon_started + 4 per execution
    subscriber = fleet.subscriber(daemon, "--since", "1")
    live = subscriber.wait_live()
    assert live["last_seq"] <= joined_at  # the rest of the 200 may still come live
    after = submit_many(daemon, "fast", 200)
    subscriber.wait_terminals(400)
    with daemon.client() as control:
        last = control.status()["last_seq"]
    summary = subscriber.finish(last, timeout=60)
    check_stream(summary, 1, last)
    assert {i: summary["terminals"].get(i) for i in before + after} == dict.fromkeys(
        before + after, "completed")
    # The first 200 came from the journal, the rest live (replay and live met, no overlap
    # delivered twice: `contiguous` above).
    assert live["last_seq"] <= summary["replayed"] < summary["count"]
    assert daemon.terminate() == 0


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_slow_subscriber_detects_its_gap_and_fills_it_by_replay(fleet: DaemonFleet) -> None:
    # Heartbeats only on subscribing (heartbeat_s 60): the loss must be found by the seq
    # jump of the next event, not by a heartbeat's last_seq.
    daemon = fleet.daemon(workflows=("wide",),
                          config={"transport": {"heartbeat_s": 60.0}}).start()
    # It reads nothing until told, with a tiny receive queue: the daemon's send queue for it
    # (100,000 messages) overflows and drops the rest of the burst.
    subscriber = fleet.subscriber(daemon, "--paused", "--rcvhwm", "10")
    live = subscriber.wait_live()
    burst = submit_many(daemon, "wide", 1000)
    with daemon.client() as control:
        wait_ended(control, burst, timeout=120)
        wait_last_seq(control, live["last_seq"] + 1000 * WIDE_EVENTS)
    subscriber.send("resume")
    # Half of what the send queue held is read: there is room again, so what comes next
    # arrives whole, right after the lost tail.
    subscriber.wait_reached(live["last_seq"] + 50_000, timeout=60)
    after = submit_many(daemon, "wide", 5, threads=1)
    subscriber.wait_terminals(1005, timeout=120)
    with daemon.client() as control:
        last = control.status()["last_seq"]
    summary = subscriber.finish(last, timeout=120)
    check_stream(summary, live["last_seq"] + 1, last)
    assert summary["gaps_filled"] >= 1, "nothing was dropped: the burst was too small"
    assert summary["replayed"] > 0 and summary["lost"] == 0
    assert summary["heartbeats"] == 1
    assert {i: summary["terminals"].get(i) for i in burst + after} == dict.fromkeys(
        burst + after, "completed")
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_a_subscriber_survives_a_daemon_restart_and_continues_from_the_next_seq(
        fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    subscriber = fleet.subscriber(daemon)
    live = subscriber.wait_live()
    first_run = submit_many(daemon, "fast", 50, threads=1)
    subscriber.wait_terminals(50)
    with daemon.client() as control:
        stopped_at = control.status()["last_seq"]
    assert daemon.terminate() == 0
    daemon.start()
    second_run = submit_many(daemon, "fast", 50, threads=1)
    subscriber.wait_terminals(100)
    with daemon.client() as control:
        last = control.status()["last_seq"]
        journal = {e["seq"]: e for e in replay_all(control, live["last_seq"] + 1)}
    summary = subscriber.finish(last, timeout=60)
    check_stream(summary, live["last_seq"] + 1, last)
    # seq continued across the restart: the old run's daemon_stopping, then the new run's
    # daemon_started right after the last seq the old run committed.
    restart_seqs = sorted(s for s, e in journal.items() if e["type"] == "daemon_started")
    assert len(restart_seqs) == 1 and stopped_at < restart_seqs[0] <= stopped_at + 2
    assert journal[restart_seqs[0] - 1]["type"] == "daemon_stopping"
    assert summary["restarts"] == 1
    assert len(summary["epochs"]) == 2 and summary["epochs"][0] != summary["epochs"][1]
    assert {i: summary["terminals"].get(i) for i in first_run + second_run} == dict.fromkeys(
        first_run + second_run, "completed")
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_20_concurrent_control_clients_submit_and_query(fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("fast",)).start()
    per_client = 20
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def client(n: int) -> None:
        try:
            with daemon.client(timeout=10.0) as control:
                start.wait(30)
                mine = []
                for i in range(per_client):
                    execution_id = control.submit("fast", {"n": n * 1000 + i})["execution_id"]
                    mine.append(execution_id)
                    found = control.execution(execution_id)
                    assert found["execution_id"] == execution_id
                    assert found["workflow_id"] == "fast"
                    if i % 5 == 0:
                        assert control.status()["state"] == "NORMAL"
                        assert control.executions(workflow="fast", limit=5)
                results[n] = mine
        except BaseException as exc:  # noqa: BLE001 - reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, repr(errors[0])
    ids = [i for mine in results.values() for i in mine]
    assert len(ids) == len(set(ids)) == 20 * per_client
    with daemon.client() as control:
        statuses = wait_ended(control, ids)
        assert set(statuses.values()) == {"completed"}
        # Each execution ran with its own client's inputs.
        for n, mine in results.items():
            found = control.execution(mine[-1])
            assert found["results"]["echo"] == {"n": n * 1000 + per_client - 1}
    assert daemon.terminate() == 0


@pytest.mark.timeout(90)
def test_halt_is_answered_at_once_beside_10000_event_replays(fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("wide",)).start()
    ids = submit_many(daemon, "wide", 10_000 // WIDE_EVENTS + 1)
    with daemon.client() as control:
        wait_ended(control, ids)
        wait_last_seq(control, 1 + len(ids) * WIDE_EVENTS)
    # Another client (one DEALER) asks for more 10,000-event replays than the control
    # server has workers, then a ping: the ping's reply proves the server has read (and
    # handed to its workers) every replay before it, since one connection is read in order.
    replayers = 12
    context = zmq.Context()
    other = context.socket(zmq.DEALER)
    other.linger, other.rcvhwm = 0, 0
    other.connect(daemon.control)
    replies: dict[Any, tuple[float, dict[str, Any]]] = {}

    def receive_until(wanted: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in replies:
            assert other.poll(max(1, int(1000 * (deadline - time.monotonic()))), zmq.POLLIN), (
                f"no reply {wanted!r} within {timeout} s")
            frames = other.recv_multipart()
            received = time.monotonic()  # before decoding 10,000 events here
            reply = msgpack.unpackb(frames[-1], raw=False)
            replies[reply["id"]] = (received, reply)

    try:
        with daemon.client(timeout=5.0) as halter:
            halter.ping()  # connected
            for n in range(replayers):
                other.send_multipart([b"", encode({"v": 1, "op": "replay", "since_seq": 1,
                                                    "limit": 10_000, "id": n})])
            other.send_multipart([b"", encode({"v": 1, "op": "ping", "id": "read"})])
            receive_until("read", 10)
            t0 = time.monotonic()
            reply = halter.halt("e2e: halt beside replays")
            halted_at = time.monotonic()
        for n in range(replayers):
            receive_until(n, 60)
    finally:
        other.close(0)
        context.term()
    assert reply == {"state": "HALT", "previous_state": "NORMAL"}
    assert halted_at - t0 < 1.0, f"halt took {1000 * (halted_at - t0):.0f} ms"
    done_at = [replies[n][0] for n in range(replayers)]
    assert [len(replies[n][1]["result"]["events"]) for n in range(replayers)] == [
        10_000] * replayers
    assert halted_at < min(done_at), (
        f"a replay finished before the halt was answered: halt {1000 * (halted_at - t0):.0f} "
        f"ms, replays {sorted(round(1000 * (d - t0)) for d in done_at)} ms")
    with daemon.client() as control:
        assert control.status()["state"] == "HALT"
    assert daemon.terminate() == 0


# -- a client nobody here wrote the library for --------------------------------------------



@pytest.mark.timeout(120)
def test_the_nodejs_client_against_the_real_daemon(node: str, fleet: DaemonFleet) -> None:
    daemon = fleet.daemon(workflows=("w", "wide")).start()
    before = submit_many(daemon, "wide", 2, threads=1)  # history: replayed in pages
    with daemon.client() as control:
        wait_ended(control, before)
        history = wait_last_seq(control, 1 + 2 * WIDE_EVENTS)
    live_runs = 3
    # The client's own submit (4 events: started, node started/completed, completed) and
    # then `live_runs` wide executions, all followed live.
    expected_last = history + 4 + live_runs * WIDE_EVENTS
    proc = subprocess.Popen([node, str(NODE_DIR / "client.mjs"), daemon.events,
                             daemon.control, str(expected_last)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    child = ChildLines(proc)
    try:
        line = child.line(60)
        assert line.startswith("live "), line
        with daemon.client() as control:
            node_submit = wait_until(lambda: control.executions(workflow="w"), 30,
                                     "the Node.js client's submit")[0]["execution_id"]
            wait_ended(control, [node_submit])
        submit_many(daemon, "wide", live_runs, threads=1)
        result = json.loads(child.line(60))
    finally:
        child.close()
    assert "error" not in result, result["error"]
    assert result["pong"] and result["statusOk"] and result["unknownOpCode"] == "unknown_op"
    assert result["executionId"] == node_submit
    assert result["heartbeat"]["hasSeq"] is False and result["heartbeat"]["type"] == "heartbeat"
    assert result["count"] == expected_last and result["contiguous"]
    assert result["outOfOrder"] == 0 and result["sawSubmitted"] and result["topicsOk"]
    assert result["replayCalls"] >= 3  # 300+ events of history in pages of 100
    assert daemon.terminate() == 0


class ChildLines:
    """A child's stdout lines with deadlines (the Node.js client)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self.stderr = ""
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def line(self, timeout: float) -> str:
        with self._cond:
            if not self._cond.wait_for(lambda: self._lines, timeout):
                self.close()
                raise AssertionError(f"no line from the child within {timeout} s; stderr: "
                                     f"{self.stderr[-2000:]}")
            return self._lines.pop(0)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._pump_thread.join(10)  # at the end of its output now: never close under it
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
