"""The publisher on real sockets: contiguous delivery to another process, heartbeats on
subscribe, packed bytes, drops, bind errors, a failing source, stop."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from actors.event_types import EVENT_TYPES
from tests.engine_journal_helpers import eventually
from tests.transport_fakes import Child, FakeLog, PackedLog, emergency_event, workflow_events
from transport import Publisher, TransportError
from transport.publisher import MAX_PREFIX_BYTES, MAX_SUBSCRIPTION_BYTES

LOCAL = "tcp://127.0.0.1:*"
PROBE = str(Path(__file__).with_name("stream_probe.py"))


@pytest.fixture
def log() -> FakeLog:
    return FakeLog()


@pytest.fixture
def publisher(log: FakeLog) -> Iterator[Publisher]:
    pub = Publisher(LOCAL, log, heartbeat_s=30.0, state_fn=lambda: "ALERT")
    pub.start()
    yield pub
    pub.stop()


def sub_socket(endpoint: str, *topics: bytes, rcvhwm: int = 0) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = rcvhwm
    for topic in topics or (b"",):
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


def recv(sock: zmq.Socket[Any], timeout: float = 5.0) -> tuple[bytes, dict[str, Any]]:
    assert sock.poll(int(timeout * 1000)), f"nothing received within {timeout}s"
    topic, payload = sock.recv_multipart()
    return topic, msgpack.unpackb(payload, raw=False)


def recv_event(sock: zmq.Socket[Any], timeout: float = 5.0) -> tuple[bytes, dict[str, Any]]:
    """The next message that is not a heartbeat (a start-up and a subscription heartbeat may
    both reach an early subscriber)."""
    deadline = time.monotonic() + timeout
    while True:
        topic, payload = recv(sock, max(0.0, deadline - time.monotonic()))
        if topic != b"system/heartbeat":
            return topic, payload


def wait_heartbeat(sock: zmq.Socket[Any], timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topic, payload = recv(sock, deadline - time.monotonic())
        if topic == b"system/heartbeat":
            return payload
    raise AssertionError("no heartbeat")


def test_a_subscriber_in_another_process_gets_every_event_contiguous(
        log: FakeLog, publisher: Publisher) -> None:
    count = 3000
    with Child([sys.executable, PROBE, publisher.endpoint, str(count), "30"]) as child:
        assert child.line(20).startswith("live")
        for start in range(0, count, 100):  # committed batches, as the journal commits them
            log.append(workflow_events(f"wf{start % 3}", 100))
        result = json.loads(child.line(30))
    assert result["seqs"] == list(range(1, count + 1))
    assert result["bad_topics"] == 0
    assert publisher.stats()["sent"] == count


def wait_sent(publisher: Publisher, seq: int, timeout: float = 20.0) -> None:
    assert publisher.wait_sent(seq, timeout), f"seq {seq} not sent within {timeout}s"


def test_heartbeat_at_once_on_subscribe_with_last_seq_epoch_and_state(
        log: FakeLog, publisher: Publisher) -> None:
    log.append(workflow_events("w", 5))
    wait_sent(publisher, 5)
    sock = sub_socket(publisher.endpoint, b"system/heartbeat")
    try:
        beat = wait_heartbeat(sock, timeout=5.0)  # heartbeat_s is 30: only a subscribe sends it
    finally:
        sock.close()
    assert beat["v"] == 1 and beat["type"] == "heartbeat" and "seq" not in beat
    assert beat["state"] == "ALERT" and beat["epoch"] == publisher.epoch
    assert len(publisher.epoch) == 16 and int(publisher.epoch, 16) >= 0
    assert beat["timestamp"].endswith("Z")
    assert beat["last_seq"] == 5  # everything sent before it


def test_each_new_subscription_gets_its_own_heartbeat(publisher: Publisher) -> None:
    first = sub_socket(publisher.endpoint)
    second = None
    try:
        wait_heartbeat(first)
        second = sub_socket(publisher.endpoint)
        wait_heartbeat(second)
        wait_heartbeat(first)  # the second subscription's heartbeat reaches everyone
    finally:
        first.close()
        if second is not None:
            second.close()
    assert publisher.stats()["subscriptions"] >= 2


def test_subscriptions_minus_unsubscriptions_is_what_the_connections_hold(
        publisher: Publisher) -> None:
    """Two connections on the same topics, one unsubscribing and one closing: every
    unsubscribe is counted (with XPUB_VERBOSE only the last subscriber's was, and the
    subscriptions gauge grew with every subscriber that came and went)."""
    def held() -> int:
        stats = publisher.stats()
        return stats["subscriptions"] - stats["unsubscriptions"]

    first = sub_socket(publisher.endpoint, b"", b"node/")
    second = sub_socket(publisher.endpoint, b"", b"node/")
    try:
        eventually(lambda: held() == 4, what="four subscriptions")
        first.setsockopt(zmq.UNSUBSCRIBE, b"node/")
        eventually(lambda: held() == 3, what="an unsubscribe beside another subscriber's")
        second.close()
        eventually(lambda: held() == 1, what="a closed connection's two subscriptions gone")
    finally:
        first.close()
    eventually(lambda: held() == 0, what="nothing held")
    assert publisher.stats()["unsubscriptions"] == 4


def test_topics_and_filters_follow_the_event_type(log: FakeLog, publisher: Publisher) -> None:
    sock = sub_socket(publisher.endpoint, b"emergency/", b"system/heartbeat")
    try:
        wait_heartbeat(sock)
        log.append([*workflow_events("w", 3), emergency_event()])
        topic, event = recv_event(sock)
    finally:
        sock.close()
    assert topic == b"emergency/emergency_state_changed"
    assert event["seq"] == 4 and event["state"] == "HALT"


def test_packed_bytes_are_sent_as_they_are() -> None:
    packed = PackedLog()
    pub = Publisher(LOCAL, packed, heartbeat_s=30.0)
    pub.start()
    sock = sub_socket(pub.endpoint)
    try:
        wait_heartbeat(sock)
        packed.append(workflow_events("w", 2))
        got = [recv_event(sock), recv_event(sock)]
    finally:
        sock.close()
        pub.stop()
    assert [e["seq"] for _, e in got] == [1, 2]
    assert got[0][0] == b"workflow/w/node_completed"
    assert packed.packed_reads >= 1


def test_start_seq_and_what_was_committed_before_start() -> None:
    log = FakeLog()
    log.append(workflow_events("w", 10))
    pub = Publisher(LOCAL, log, heartbeat_s=30.0)
    pub.start()
    sock = sub_socket(pub.endpoint)
    try:
        beat = wait_heartbeat(sock)
        assert beat["last_seq"] == 10  # starts after what was committed: nothing resent
        log.append(workflow_events("w", 1))
        _, event = recv_event(sock)
        assert event["seq"] == 11
    finally:
        sock.close()
        pub.stop()


def test_system_notices_without_seq(publisher: Publisher) -> None:
    sock = sub_socket(publisher.endpoint, b"system/daemon")
    try:
        # no heartbeat on this filter: wait until the subscription is seen, then publish
        deadline = time.monotonic() + 5
        while publisher.stats()["subscriptions"] < 1:
            assert time.monotonic() < deadline
            sock.poll(10)
        publisher.publish({"type": "daemon_stopping", "version": "1", "pid": 1})
        topic, event = recv(sock)
    finally:
        sock.close()
    assert topic == b"system/daemon_stopping" and "seq" not in event and event["v"] == 1


def test_nodrop_counts_the_sends_a_full_subscriber_refuses(log: FakeLog) -> None:
    pub = Publisher(LOCAL, log, heartbeat_s=30.0, sndhwm=10, nodrop=True,
                    options={zmq.SNDBUF: 4096})
    pub.start()
    sock = sub_socket(pub.endpoint, rcvhwm=10)
    sock.setsockopt(zmq.RCVBUF, 4096)
    try:
        wait_heartbeat(sock)
        log.append(workflow_events("w", 3000, pad=1000))  # nobody reads: queues fill up
        wait_sent(pub, 3000)
        stats = pub.stats()
    finally:
        sock.close()
        pub.stop()
    assert stats["last_seq"] == 3000
    assert stats["dropped"] > 0 and stats["sent"] + stats["dropped"] == 3000


def test_a_port_in_use_fails_start_in_the_callers_thread(publisher: Publisher) -> None:
    second = Publisher(publisher.endpoint, FakeLog())
    with pytest.raises(TransportError, match=r"cannot bind the publisher on tcp://127\.0\.0\.1"):
        second.start()
    assert not second.running


def test_plain_text_on_a_public_address_is_refused() -> None:
    with pytest.raises(TransportError, match=r"refusing to bind tcp://0\.0\.0\.0:\* without"):
        Publisher("tcp://0.0.0.0:*", FakeLog()).start()


def test_a_failing_source_does_not_stop_the_stream(log: FakeLog, publisher: Publisher) -> None:
    sock = sub_socket(publisher.endpoint)
    try:
        wait_heartbeat(sock)
        log.fail_reads = 1
        log.append(workflow_events("w", 2))
        assert [recv_event(sock)[1]["seq"], recv_event(sock)[1]["seq"]] == [1, 2]
    finally:
        sock.close()


def test_stop_closes_the_socket_so_the_port_can_be_bound_again(log: FakeLog) -> None:
    # Its own context, terminated after the stop, as the daemon's and an in-process
    # engine's are (transport/engine_sockets.py): libzmq closes a socket's listener in its
    # I/O thread, and only `term()` waits for that (with the shared context, a rebind right
    # after the stop failed "Address already in use" about one time in ten).
    context: zmq.Context[Any] = zmq.Context()
    pub = Publisher(LOCAL, log, context=context)
    pub.start()
    endpoint = pub.endpoint
    pub.stop()
    assert not pub.running
    terminated = threading.Thread(target=context.term, daemon=True)
    terminated.start()  # term() waits for every socket: it returns only if stop closed it
    terminated.join(10)
    assert not terminated.is_alive(), "the publisher's socket was left open"
    again = Publisher(endpoint, log)
    again.start()
    try:
        assert again.endpoint == endpoint and again.epoch != pub.epoch
    finally:
        again.stop()


def test_an_oversized_subscription_drops_that_peer_and_nothing_else(
        publisher: Publisher) -> None:
    # Unbounded, one 50 MB subscription cost the daemon 2.5 GB (libzmq's subscription trie).
    hostile: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.XSUB)
    hostile.linger = 0
    monitor = hostile.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock = sub_socket(publisher.endpoint)
    try:
        hostile.connect(publisher.endpoint)
        hostile.send(b"\x01" + b"x" * (MAX_SUBSCRIPTION_BYTES + 1))
        assert monitor.poll(5000), "the publisher kept a peer that sent an oversized message"
        beat = wait_heartbeat(sock)  # others are served as before
        assert beat["type"] == "heartbeat"
        assert publisher.stats()["subscriptions"] <= 1  # never the oversized one
    finally:
        hostile.disable_monitor()
        monitor.close(linger=0)
        hostile.close(linger=0)
        sock.close()


def test_every_topic_fits_a_prefix_and_a_prefix_fits_a_subscription() -> None:
    """A subscription to any whole topic is kept, even sent as a ZeroMQ 3.1 SUBSCRIBE
    command (10 bytes of name) in a CURVE box (34 bytes), and the cap is half the former
    1024 bytes (the CURVE handshake needs about 300: tests/test_cli_daemon.py's CURVE
    test fails at 256)."""
    longest = max(len(f"workflow/{'x' * 128}/{kind}") for kind in EVENT_TYPES)
    assert longest <= MAX_PREFIX_BYTES <= MAX_SUBSCRIPTION_BYTES - 10 - 34
    assert MAX_SUBSCRIPTION_BYTES <= 512


def test_a_flood_of_long_subscriptions_is_dropped_while_a_subscriber_streams_on(
        log: FakeLog, publisher: Publisher) -> None:
    """The probe's flood (distinct 999-byte subscriptions, under the former 1024-byte cap:
    20,000 took the daemon to 1 GB) drops its connection at the first; a subscriber to the
    longest topic there is, on the same publisher, gets its heartbeat and every event."""
    workflow_id = "w" * 128
    topic = f"workflow/{workflow_id}/node_completed".encode()
    flood: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.XSUB)
    flood.linger = 0
    flood.sndhwm = 0
    flood.reconnect_ivl = 60_000  # one connection: the one the publisher drops
    monitor = flood.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    sock = sub_socket(publisher.endpoint, topic, b"system/heartbeat", rcvhwm=100_000)
    try:
        wait_heartbeat(sock)
        flood.connect(publisher.endpoint)
        for k in range(2000):
            flood.send(b"\x01" + b"%09d" % k + b"y" * 989)
        assert monitor.poll(5000), "the publisher kept a peer flooding long subscriptions"
        log.append(workflow_events(workflow_id, 500))
        seqs: list[int] = []
        while len(seqs) < 500:
            got, event = recv_event(sock)
            assert got == topic
            seqs.append(event["seq"])
        assert seqs == list(range(1, 501))
        sock.setsockopt(zmq.SUBSCRIBE, b"emergency/")  # a subscription is still served
        assert wait_heartbeat(sock)["last_seq"] == 500
        eventually(lambda: publisher.stats()["subscriptions"] >= 3, 5.0, "the resubscribe")
        assert publisher.stats()["subscriptions"] == 3  # the subscriber's only
    finally:
        flood.disable_monitor()
        monitor.close(linger=0)
        flood.close(linger=0)
        sock.close()
