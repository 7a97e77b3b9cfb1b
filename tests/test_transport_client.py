"""The client library on real sockets: ControlClient timeouts and recovery; Subscriber
catch-up, gap filling, filters, a daemon restart, resuming from a saved seq."""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from tests.engine_journal_helpers import captured_logs, eventually
from tests.transport_fakes import (
    REPLAY_GATE_S,
    FakeHandler,
    FakeLog,
    emergency_event,
    workflow_events,
)
from transport import ControlServer, Publisher
from transport.client import ControlClient, DaemonUnreachable, Subscriber, TransportError
from transport.errors import BadRequestError
from transport.publisher import MAX_PREFIX_BYTES

LOCAL = "tcp://127.0.0.1:*"
Event = dict[str, object]


class Daemon:
    """A publisher and a control server over one FakeLog: the daemon's transport half."""

    def __init__(self, log: FakeLog | None = None, *, events: str = LOCAL,
                 control: str = LOCAL, heartbeat_s: float = 0.2,
                 **publisher_options: object) -> None:
        self.log = log or FakeLog()
        self.handler = FakeHandler(self.log)
        self.publisher = Publisher(events, self.log, heartbeat_s=heartbeat_s,
                                   **publisher_options)  # type: ignore[arg-type]
        self.control = ControlServer(control, self.handler)
        self.publisher.start()
        self.control.start()

    def replays(self) -> int:
        return sum(op == "replay" for op in self.handler.ops())

    def stop(self) -> None:
        self.publisher.stop()
        self.control.stop()


@pytest.fixture
def daemon() -> Iterator[Daemon]:
    d = Daemon()
    yield d
    d.stop()


def subscriber(d: Daemon, **kwargs: object) -> Subscriber:
    return Subscriber(d.publisher.endpoint, d.control.endpoint, **kwargs)  # type: ignore[arg-type]


def take(sub: Subscriber, count: int, timeout: float = 20.0) -> list[Event]:
    deadline = time.monotonic() + timeout
    out: list[Event] = []
    while len(out) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(out)} of {count} events within {timeout}s"
        event = sub.next(remaining)
        if event is not None:
            out.append(event)
    return out


def seqs(events: list[Event]) -> list[int]:
    return [int(str(e["seq"])) for e in events]


def wait_sent(publisher: Publisher, seq: int, timeout: float = 20.0) -> None:
    assert publisher.wait_sent(seq, timeout), f"seq {seq} not sent within {timeout}s"


# -- ControlClient --------------------------------------------------------------------------

def test_unreachable_within_the_timeout_then_the_same_client_works() -> None:
    probe = ControlServer(LOCAL, FakeHandler())
    probe.start()
    endpoint = probe.endpoint
    probe.stop()  # now nothing listens there
    client = ControlClient(endpoint, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(DaemonUnreachable, match=r"no reply from tcp://127\.0\.0\.1:\d+"):
            client.ping()
        assert time.monotonic() - started < 2.0
        server = ControlServer(endpoint, FakeHandler())
        server.start()
        try:
            assert client.ping()["pong"] is True  # a fresh socket: not wedged by the lost one
            assert client.status()["state"] == "NORMAL"
        finally:
            server.stop()
    finally:
        client.close()


def test_a_closed_client_refuses(daemon: Daemon) -> None:
    client = ControlClient(daemon.control.endpoint)
    client.close()
    with pytest.raises(Exception, match="closed"):
        client.ping()


class Interrupted(Exception):
    """What the test's signal handler raises in the middle of a request."""


@contextlib.contextmanager
def signal_during_replay(daemon: Daemon, handler: Callable[[], None]) -> Iterator[None]:
    """Inside: a `replay` waits (its gate closed) and SIGUSR1 runs `handler` in this (the
    main) thread meanwhile, as a signal handler does; the gate opens after it."""
    gate = daemon.handler.replay_gate = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        try:
            handler()
        finally:
            gate.set()

    def send_signal() -> None:
        # (As long as the fake holds the replay: on a loaded machine its start can take
        # seconds, and no signal then meant a replay held until the fake gave up.)
        if daemon.handler.replay_started.wait(REPLAY_GATE_S):
            # At the main thread itself: its poll must see EINTR (any thread may take
            # a process-wide signal, and the handler would wait for the poll to time out).
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_signal)
    sender = threading.Thread(target=send_signal)
    sender.start()
    try:
        yield
    finally:
        sender.join(10.0)
        gate.set()
        signal.signal(signal.SIGUSR1, previous)


def test_a_request_interrupted_before_its_reply_leaves_the_client_usable(
        daemon: Daemon) -> None:
    # A signal handler's exception (or Ctrl-C) between send and reply once left the REQ
    # socket waiting: every later call failed with DaemonUnreachable, the daemon up.
    def interrupt() -> None:
        raise Interrupted

    with ControlClient(daemon.control.endpoint, timeout=10.0) as client:
        with signal_during_replay(daemon, interrupt), pytest.raises(Interrupted):
            client.replay(1)
        assert client.ping()["pong"] is True


@pytest.mark.timeout(40)  # the old lock deadlocked here, in the signal handler
def test_a_signal_handler_can_halt_through_the_client_its_thread_is_waiting_on(
        daemon: Daemon) -> None:
    halted: list[dict[str, object]] = []
    with ControlClient(daemon.control.endpoint, timeout=10.0) as client:
        with signal_during_replay(daemon, lambda: halted.append(client.halt("SIGUSR1"))):
            replay = client.replay(1)
        assert halted == [{"state": "HALT", "previous_state": "NORMAL"}]
        assert replay["next_seq"] == 1  # the outer request got its own reply
        assert client.status()["state"] == "HALT"


@pytest.mark.timeout(40)
def test_a_signal_handler_closing_the_client_ends_the_request_waiting_on_it(
        daemon: Daemon) -> None:
    client = ControlClient(daemon.control.endpoint, timeout=10.0)
    with signal_during_replay(daemon, client.close), pytest.raises(
            TransportError, match="the control client was closed during replay"):
        client.replay(1)
    with pytest.raises(TransportError, match="the control client is closed"):
        client.ping()


@pytest.mark.parametrize("timeout", [math.inf, 1e300])
def test_an_endless_timeout_waits_for_the_reply(daemon: Daemon, timeout: float) -> None:
    with ControlClient(daemon.control.endpoint, timeout=timeout) as client:
        assert client.ping()["pong"] is True
        assert client.request("status", timeout=timeout)["state"] == "NORMAL"


def in_zmq_poll(thread: threading.Thread) -> bool:
    """Whether `thread` is inside pyzmq's poll (blocked in the system call, or about to be)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return frame is not None and frame.f_code.co_name == "poll" and "zmq" in (
        frame.f_code.co_filename)


@pytest.mark.timeout(30)  # without the poll slices the loop below waited for ever
def test_a_signal_handler_closing_a_subscriber_ends_its_for_loop_with_no_daemon() -> None:
    """The documented way to end `for event in sub:` is `close()` from a signal handler. A
    signal that does not interrupt the main thread's poll (here: taken by another thread,
    as when it lands just before the poll's system call) runs its handler only once the
    poll returns; with no daemon no message ever returns it."""
    sub = Subscriber("tcp://127.0.0.1:1", "tcp://127.0.0.1:1", timeout=0.5)
    main = threading.main_thread()
    closed_at: list[float] = []

    def on_signal(signum: int, frame: object) -> None:
        closed_at.append(time.monotonic())
        sub.close()

    def send_signal() -> None:
        eventually(lambda: in_zmq_poll(main), 10.0, "the for loop waiting in its poll")
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)  # this thread takes it

    previous = signal.signal(signal.SIGUSR1, on_signal)
    sender = threading.Thread(target=send_signal)
    sender.start()
    try:
        assert list(sub) == []
        ended_at = time.monotonic()
    finally:
        sender.join(10.0)
        signal.signal(signal.SIGUSR1, previous)
    assert len(closed_at) == 1
    assert ended_at - closed_at[0] < 2.0


@pytest.mark.parametrize("timeout", [0, -1.0, math.nan, "5", True])
def test_a_timeout_that_is_not_a_positive_number_is_refused(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        ControlClient("tcp://127.0.0.1:1", timeout=timeout)  # type: ignore[arg-type]


# -- Subscriber -----------------------------------------------------------------------------

def test_live_without_sleeping_and_unreachable_without_a_publisher(daemon: Daemon) -> None:
    with subscriber(daemon) as sub:
        sub.wait_live(5.0)
        assert sub.live and sub.epoch == daemon.publisher.epoch
    probe = Publisher(LOCAL, FakeLog())
    probe.start()
    dead = probe.endpoint
    probe.stop()
    with Subscriber(dead, daemon.control.endpoint) as sub, pytest.raises(DaemonUnreachable):
        sub.wait_live(0.3)


def test_a_late_joiner_replays_then_continues_live_with_no_gap_or_duplicate() -> None:
    daemon = Daemon(heartbeat_s=60.0)  # only the subscription's own heartbeat comes
    try:
        late_joiner(daemon)
    finally:
        daemon.stop()


def late_joiner(daemon: Daemon) -> None:
    daemon.log.append(workflow_events("w", 2500))
    wait_sent(daemon.publisher, 2500)  # sent before anyone listened: only replay has them
    with subscriber(daemon, since_seq=1) as sub:
        sub.wait_live(5.0)
        got = take(sub, 1000)  # from replay alone: nothing new is published meanwhile
        daemon.log.append(workflow_events("w", 500))  # live while still catching up
        got += take(sub, 2000)
        daemon.log.append(workflow_events("w", 10))
        got += take(sub, 10)
        assert sub.next(0.3) is None
        assert sub.gaps_filled == 0 and sub.replayed >= 2500
    assert seqs(got) == list(range(1, 3011))


def test_a_slow_subscriber_detects_its_gap_and_fills_it(daemon: Daemon) -> None:
    d = Daemon(sndhwm=20, options={zmq.SNDBUF: 4096})
    try:
        with subscriber(d, rcvhwm=20) as sub:
            sub.wait_live(5.0)
            for _ in range(10):
                d.log.append(workflow_events("w", 400, pad=1000))  # nobody reads meanwhile
            wait_sent(d.publisher, 4000)
            got = take(sub, 4000, timeout=30)
            assert sub.next(0.3) is None
            assert sub.gaps_filled >= 1 and sub.replayed > 0 and sub.duplicates >= 0
    finally:
        d.stop()
    assert seqs(got) == list(range(1, 4001))


def test_one_workflow_filter_needs_no_replay_for_other_workflows_traffic(
        daemon: Daemon) -> None:
    with subscriber(daemon, topics=("workflow/a/",)) as sub:
        sub.wait_live(5.0)
        for _ in range(50):
            daemon.log.append(workflow_events("a", 3) + workflow_events("b", 7))
        got = take(sub, 150)
        replays, heartbeats = daemon.replays(), sub.heartbeats
    assert [e["workflow_id"] for e in got] == ["a"] * 150
    assert [e["wseq"] for e in got] == list(range(1, 151))
    assert seqs(got) == sorted(set(seqs(got)))
    # heartbeat tail checks only (one per heartbeat at most), not one per jump (49 jumps)
    assert replays <= heartbeats


def test_several_filters_deliver_their_union_in_seq_order(daemon: Daemon) -> None:
    with subscriber(daemon, topics=("workflow/a/", "emergency/")) as sub:
        sub.wait_live(5.0)
        for _ in range(5):
            daemon.log.append(workflow_events("a", 2) + workflow_events("b", 2)
                              + [emergency_event()])
        got = take(sub, 15)
        assert sub.next(0.3) is None
    assert seqs(got) == sorted(seqs(got)) and len(set(seqs(got))) == 15
    assert {str(e["type"]) for e in got} == {"node_completed", "emergency_state_changed"}
    assert all(e.get("workflow_id") in ("a", None) for e in got)


def test_a_filtered_slow_subscriber_fills_its_gaps_from_a_prefix_replay() -> None:
    d = Daemon(sndhwm=20, options={zmq.SNDBUF: 4096})
    try:
        with subscriber(d, topics=("workflow/a/", "workflow/c/"), rcvhwm=20) as sub:
            sub.wait_live(5.0)
            for _ in range(10):
                d.log.append(workflow_events("a", 200, pad=1000)
                             + workflow_events("b", 100, pad=1000)
                             + workflow_events("c", 100, pad=1000))
            wait_sent(d.publisher, 4000)
            got = take(sub, 3000, timeout=30)
            assert sub.next(0.3) is None
            assert sub.gaps_filled >= 1
    finally:
        d.stop()
    assert [e["workflow_id"] for e in got].count("a") == 2000
    assert seqs(got) == sorted(set(seqs(got)))
    a_wseq = [e["wseq"] for e in got if e["workflow_id"] == "a"]
    assert a_wseq == list(range(1, 2001))


def test_a_subscriber_survives_a_daemon_restart_and_continues_from_the_next_seq() -> None:
    log = FakeLog()
    first = Daemon(log)
    events, control = first.publisher.endpoint, first.control.endpoint
    with Subscriber(events, control) as sub:
        sub.wait_live(5.0)
        log.append(workflow_events("w", 100))
        got = take(sub, 100)
        first.stop()
        log.append(workflow_events("w", 50))  # committed while no daemon runs
        second = Daemon(log, events=events, control=control)
        try:
            got += take(sub, 50)  # only the new epoch's heartbeat tells of these
            log.append(workflow_events("w", 50))
            got += take(sub, 50)
            assert sub.restarts == 1 and sub.epoch == second.publisher.epoch
            assert sub.next(0.3) is None
        finally:
            second.stop()
    assert seqs(got) == list(range(1, 201))


def test_resume_from_a_saved_seq_after_the_subscribers_own_restart(daemon: Daemon) -> None:
    daemon.log.append(workflow_events("w", 300))
    with subscriber(daemon, since_seq=1) as sub:
        saved = int(str(take(sub, 120)[-1]["seq"]))
    daemon.log.append(workflow_events("w", 30))
    with subscriber(daemon, since_seq=saved + 1) as sub:
        got = take(sub, 210)
        assert sub.next(0.3) is None
    assert seqs(got) == list(range(121, 331))


def test_next_without_waiting_returns_what_has_arrived(daemon: Daemon) -> None:
    with subscriber(daemon) as sub:
        sub.wait_live(5.0)
        daemon.log.append(workflow_events("w", 3))
        wait_sent(daemon.publisher, 3)
        deadline = time.monotonic() + 5.0
        got: list[Event] = []
        while len(got) < 3:  # polled as a loop that must never block would
            assert time.monotonic() < deadline, f"next(0) gave {seqs(got)} of 1-3"
            event = sub.next(0)
            if event is not None:
                got.append(event)
        assert seqs(got) == [1, 2, 3]
        assert sub.next(0) is None  # and nothing more: it does not wait


def test_a_closed_subscriber_refuses_with_a_transport_error(daemon: Daemon) -> None:
    sub = subscriber(daemon)
    sub.wait_live(5.0)
    sub.close()
    with pytest.raises(TransportError, match="the subscriber is closed"):
        sub.next(0.1)
    with pytest.raises(TransportError, match="the subscriber is closed"):
        next(iter(sub))
    sub.close()  # twice is fine


def test_topics_must_be_a_sequence_of_strings(daemon: Daemon) -> None:
    with pytest.raises(TypeError):
        subscriber(daemon, topics="workflow/a/")
    with pytest.raises(TypeError):
        subscriber(daemon, since_seq="5")
    with pytest.raises(ValueError, match=f"at most {MAX_PREFIX_BYTES} bytes"):  # dropped
        subscriber(daemon, topics=("x" * (MAX_PREFIX_BYTES + 1),))


def test_the_longest_prefix_the_subscriber_takes_is_one_the_daemon_keeps(
        daemon: Daemon) -> None:
    """A MAX_PREFIX_BYTES prefix goes live (once, prefixes the daemon dropped passed the
    Subscriber's own check: never live, with no word why)."""
    with subscriber(daemon, topics=("x" * MAX_PREFIX_BYTES, "")) as sub:
        sub.wait_live(5.0)
    for page in (0, 10_001, True, 1.5):  # a replay limit the daemon refuses
        with pytest.raises(ValueError, match="page must be an int from 1 to 10000"):
            subscriber(daemon, page=page)


def test_a_tuple_key_in_an_output_arrives_as_its_string_form(daemon: Daemon) -> None:
    # msgpack packs a tuple key as an array, which cannot be a dict key when read back.
    event = workflow_events("wf", 1)[0]
    event["outputs"] = {(1, 2): "x", ("a", (3, 4)): 5, "k": [1, 2]}
    with subscriber(daemon) as sub:
        sub.wait_live(5.0)
        daemon.log.append([event])
        [got] = take(sub, 1)
    assert got["outputs"] == {"(1, 2)": "x", "('a', (3, 4))": 5, "k": [1, 2]}
    assert sub.malformed == 0


@pytest.mark.parametrize("call", [
    lambda c: c.replay(10**30),
    lambda c: c.submit("wf", {"size": [1, {"deep": -(2**63) - 1}]}),
    lambda c: c.executions(limit=2**64),
], ids=["replay", "submit-inputs", "executions"])
def test_an_integer_beyond_64_bits_is_refused_unsent(
        call: Callable[[ControlClient], object]) -> None:
    """msgpack has no form for it: it went as its text (a since_seq "not an integer", an
    input run as a string). Refused at once, nothing sent (no daemon is asked here)."""
    with ControlClient("tcp://127.0.0.1:1", timeout=30.0) as client:
        started = time.monotonic()
        with pytest.raises(BadRequestError, match="an integer beyond 64 bits"):
            call(client)
        assert time.monotonic() - started < 5.0  # not a wait for a reply


def test_the_64_bit_extremes_are_sent_as_integers(daemon: Daemon) -> None:
    with ControlClient(daemon.control.endpoint, timeout=10.0) as client:
        reply = client.request("ping", big=2**64 - 1, small=-(2**63))
    assert reply["pong"] is True


def test_the_for_loop_outlives_a_control_socket_down_longer_than_its_timeout() -> None:
    """The documented `for event in stream:` loop goes on across an outage: a replay that
    gets no answer within the control timeout ended it with DaemonUnreachable."""
    log = FakeLog()
    log.append(workflow_events("w", 100))
    daemon = Daemon(log)
    events, control = daemon.publisher.endpoint, daemon.control.endpoint
    daemon.control.stop()  # the late joiner's replay finds no one
    got: list[Event] = []
    done, failed = threading.Event(), []

    def consume() -> None:
        try:
            with Subscriber(events, control, since_seq=1, timeout=0.3) as sub:
                for event in sub:
                    got.append(event)
                    if len(got) == 100:
                        done.set()
                        return
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failed.append(exc)
            done.set()

    with captured_logs() as logs:
        consumer = threading.Thread(target=consume, daemon=True)  # (never outlives a failure)
        consumer.start()
        try:
            eventually(lambda: any(e["event"] == "subscriber_replay_unreachable"
                                   for e in logs), 10.0, "a replay that got no answer")
            assert not done.is_set()
            restarted = ControlServer(control, daemon.handler)
            restarted.start()
            try:
                assert done.wait(10.0)
            finally:
                restarted.stop()
        finally:
            daemon.publisher.stop()
            consumer.join(10.0)
    assert failed == []
    assert seqs(got) == list(range(1, 101))
