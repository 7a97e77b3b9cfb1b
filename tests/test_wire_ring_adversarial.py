"""The wire ring (actors/wire_ring.py) under adversarial conditions: a ring small enough to
lap many times, a publisher that starts late or lags, commits that fail and are retried
merged with later work, a seq gap in a batch, values msgpack refuses, and a daemon nobody
reads from. What a ZeroMQ subscriber receives for a seq must be that seq's event, byte for
byte what a replay from the journal gives."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgpack
import zmq

from actors import Engine, Node, Workflow
from actors.eventlog import EventLog
from actors.events import topic_of
from actors.journal import Journal
from actors.packing import pack, unpack, unpack_lenient
from actors.subscription import LogReader
from actors.wire_ring import WireRing
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import all_events, eventually, journal_config
from tests.journal_helpers import Sequencer, sys_event
from tests.test_wire_ring import Handovers
from transport import Publisher

LOCAL = "tcp://127.0.0.1:*"


def workflow(workflow_id: str) -> Workflow:
    return Workflow(workflow_id, nodes=[
        Node("quote", lambda ctx: {"price": 1.5, "n": ctx.inputs.get("n")},
             category="provider"),
        Node("order", lambda ctx: {"id": ctx.idempotency_key, "pad": "x" * 40},
             category="action", depends_on=["quote"]),
    ])


class Gated:
    """The publisher's source (a LogReader) shut until `open` is set: the publisher sends
    nothing before the test's SUB socket is live (what a PUB sends to nobody is lost)."""

    def __init__(self, reader: LogReader, start_seq: int) -> None:
        self.reader = reader
        self.start_seq = start_seq
        self.open = threading.Event()

    def committed_seq(self) -> int:
        return self.reader.committed_seq() if self.open.is_set() else self.start_seq - 1

    def wait_committed(self, after_seq: int, timeout: float) -> int:
        if not self.open.is_set():
            self.open.wait(timeout)
            return self.committed_seq()
        return self.reader.wait_committed(after_seq, timeout)

    def read(self, since_seq: int, limit: int) -> list[dict[str, Any]]:
        return self.reader.read(since_seq, limit)

    def read_packed(self, since_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        return self.reader.read_packed(since_seq, limit)


@contextmanager
def publishing(engine: Engine, start_seq: int | None = None
               ) -> Iterator[tuple[Publisher, zmq.Socket[Any]]]:
    """A real publisher on the engine's log (from `start_seq`, default the next committed
    seq) and a SUB socket, live before the publisher sends anything."""
    log = engine.sink.log
    first = start_seq if start_seq is not None else log.committed_seq + 1
    source = Gated(log.reader(first), first)
    publisher = Publisher(LOCAL, source, heartbeat_s=30.0, start_seq=first)
    publisher.start()
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.rcvhwm = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    try:
        sock.connect(publisher.endpoint)
        wait_heartbeat(sock)
        source.open.set()
        yield publisher, sock
    finally:
        sock.close()
        publisher.stop()
        log.remove_reader(source.reader)


def unpack_strict(payload: bytes) -> Any:
    return msgpack.unpackb(payload, raw=False)


def wait_heartbeat(sock: zmq.Socket[Any], timeout: float = 10.0) -> None:
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            if sock.poll(100) and sock.recv_multipart()[0] == b"system/heartbeat":
                return
        raise AssertionError(f"no heartbeat within {timeout}s")
    finally:
        timer.cancel()


def receive_through(sock: zmq.Socket[Any], last_seq: int, timeout: float = 20.0,
                    decode: Callable[[bytes], Any] = unpack_strict
                    ) -> dict[int, tuple[bytes, bytes]]:
    """seq -> (topic, payload) of every event received until `last_seq` came."""
    got: dict[int, tuple[bytes, bytes]] = {}
    expired = threading.Event()
    timer = threading.Timer(timeout, expired.set)
    timer.start()
    try:
        while last_seq not in got:
            assert not expired.is_set(), f"seq {last_seq} not received within {timeout}s"
            if not sock.poll(50):
                continue
            topic, payload = sock.recv_multipart()
            if topic == b"system/heartbeat":
                continue
            seq = decode(payload)["seq"]
            assert seq not in got, f"seq {seq} received twice"
            got[seq] = (topic, payload)
    finally:
        timer.cancel()
    return got


def assert_each_is_its_replayed_event(engine: Engine, got: dict[int, tuple[bytes, bytes]],
                                      first: int, last: int) -> None:
    assert sorted(got) == list(range(first, last + 1))
    stored = {event["seq"]: event for event in all_events(engine, first)}
    for seq, (topic, payload) in got.items():
        event = stored[seq]
        assert topic == topic_of(event).encode(), seq
        assert unpack(payload) == event, seq
        assert payload == pack(event), seq  # byte for byte what a replay re-encodes


def run_workflows(engine: Engine, count: int, *, concurrent: bool) -> None:
    if concurrent:
        handles = [engine.submit(workflow(f"wf{i % 3}"), {"n": i}) for i in range(count)]
        for handle in handles:
            assert handle.result(20).status == "completed"
    else:
        for i in range(count):
            assert engine.submit(workflow(f"wf{i % 3}"), {"n": i}).result(20).status == \
                "completed"


# -- a ring that laps ------------------------------------------------------------------------

def test_a_late_publisher_sends_no_payload_of_an_earlier_lap(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    """The publisher starts once the ring has lapped many times: every slot it looks at
    holds a later seq's payload; it must pack those events itself, not send a later one."""
    engine = make_engine(journal_config(tmp_path), _event_ring_size=8)
    log = engine.sink.log
    holder = log.reader()  # keeps the floor down: no slot is cleared, each is overwritten
    try:
        first = holder.next_seq
        run_workflows(engine, 12, concurrent=False)
        last = log.committed_seq
        assert last - first + 1 > 4 * 8  # lapped several times
        assert all(log.wire.payload(s) is None for s in range(first, last - 8 + 1))
        with publishing(engine, start_seq=first) as (_, sock):
            got = receive_through(sock, last)
        assert_each_is_its_replayed_event(engine, got, first, last)
    finally:
        log.remove_reader(holder)


def test_a_live_publisher_on_a_small_ring_sends_each_seq_its_own_event(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """Executions run side by side while the publisher reads: the writer's `keep`, the
    log's `clear` and the publisher's `payload` race over slots that lap every 8 seqs."""
    engine = make_engine(journal_config(tmp_path), _event_ring_size=8)
    log = engine.sink.log
    first = log.committed_seq + 1
    with publishing(engine) as (_, sock):
        run_workflows(engine, 30, concurrent=True)
        last = log.committed_seq
        got = receive_through(sock, last)
    assert_each_is_its_replayed_event(engine, got, first, last)


def test_a_cursor_more_than_a_ring_behind_does_not_shrink_the_ring() -> None:
    """The floor (the slowest cursor) is below the oldest slot still holding its own seq:
    nothing may be cleared. A slice with a negative stop counts from the end: the ring
    shrank, the cursor lost what the ring still held, and later appends raised IndexError."""
    log = EventLog(ring_size=8)
    reader = log.reader()

    def tick(seq: int) -> dict[str, Any]:
        return {"v": 1, "type": "tick", "seq": seq, "timestamp": "2026-01-01T00:00:00.000Z"}

    try:
        for seq in range(1, 7):
            log.append([tick(seq)])
        assert [e["seq"] for e in reader.read(1, 6)] == list(range(1, 7))
        assert reader.read(7, 1) == []  # the cursor waits at 7
        log.append([tick(seq) for seq in range(7, 21)])  # 7..12 are overwritten already
        assert len(log._ring) == 8
        assert [e["seq"] for e in reader.read(7, 100)] == list(range(13, 21))
        assert reader.missed == 6
        log.append([tick(seq) for seq in range(21, 40)])  # (raised IndexError)
        assert [e["seq"] for e in reader.read(21, 100)][-1] == 39
    finally:
        log.remove_reader(reader)


def test_appends_go_on_while_a_reader_crawls_more_than_a_ring_behind(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """The engine-level face of the same: the publisher's reader (here crawling a seq at a
    time) over a ring behind; every execution completes and the reader reads on, in
    order, from the ring or the journal."""
    engine = make_engine(journal_config(tmp_path), _event_ring_size=8)
    log = engine.sink.log
    crawler = log.reader()
    try:
        first = crawler.next_seq
        run_workflows(engine, 3, concurrent=False)
        for i in range(16):
            # 9-12 seqs behind the last committed: the next append's clear pass finds the
            # floor below the ring's oldest slot, by less than a ring.
            crawler.read(max(crawler.next_seq, log.committed_seq - 9 - i % 4), 1)
            assert engine.submit(workflow("wf"), {"n": i}).result(10).status == "completed"
        last = log.committed_seq
        seqs = [e["seq"] for e in crawler.read(first, 10_000)]
        assert seqs == list(range(first, last + 1))
    finally:
        log.remove_reader(crawler)


# -- the writer's hand-over --------------------------------------------------------------------

def test_failed_commits_hand_over_nothing_and_the_retry_hands_each_seq_once(
        tmp_path: Path) -> None:
    """Two commits fail (the group is kept, merged with what queues meanwhile, retried):
    `on_packed` is not called for a failed commit, and the successful one hands over each
    seq exactly once, each before the committed mark moves past it."""
    journal = Journal.open(tmp_path)
    handovers = Handovers(120)
    try:
        writer = journal._writer
        journal._testing_fail_commits(2)
        writer.retry_min_s = writer.retry_max_s = 0.1
        seq = Sequencer(journal)
        handovers.start(journal)
        for i in range(60):
            seq.emit(sys_event("tick", n=i))
        eventually(lambda: writer.failures == 1, what="the first commit failed")
        for i in range(60, 120):  # queued while the writer backs off: merged into its group
            seq.emit(sys_event("tick", n=i))
        assert handovers.done.wait(10)
        assert writer.failures == 2
        handed = handovers.handed()
        seqs = [s for s, _ in handed]
        assert sorted(seqs) == seqs == list(range(1, 121))  # once each, in order
        stored = {event["seq"]: event for event in journal_events(journal)}
        for s, payload in handed:
            assert unpack(payload) == stored[s]
    finally:
        journal.close()


def test_a_seq_gap_in_a_batch_does_not_label_payloads_with_the_wrong_seq(
        tmp_path: Path) -> None:
    """A batch with a hole in its seqs (the writer logs `journal_seq_gap` and writes on):
    the ring must never answer seq s with another event's bytes."""
    journal = Journal.open(tmp_path)
    ring = WireRing(base=1, size=64)
    done = threading.Event()
    try:
        events = [{**sys_event("tick", n=s), "seq": s, "timestamp": "2026-01-01T00:00:00.000Z"}
                  for s in (1, 2, 5, 6)]
        journal.append(events[:2])
        journal.append(events[2:])  # 3 and 4 never came; one take writes both
        journal.start(on_commit=lambda seq: done.set() if seq >= 6 else None,
                      on_error=lambda exc: None, on_packed=ring.keep)
        assert done.wait(10)
        for s in range(1, 7):
            payload = ring.payload(s)
            assert payload is None or unpack(payload)["seq"] == s, (s, unpack(payload))
        assert [unpack(ring.payload(s) or b"\xc0") for s in (1, 2, 5, 6)] == events
    finally:
        journal.close()


def journal_events(journal: Journal) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    since = 1
    while True:
        page = journal.replay(since, 1000)
        events += page["events"]
        if page["next_seq"] > page["last_seq"]:
            return events
        since = page["next_seq"]


# -- values msgpack refuses --------------------------------------------------------------------

class Unprintable:
    def __str__(self) -> str:
        raise ValueError("no string form")


def test_values_msgpack_refuses_reach_a_subscriber_decodable(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    """A lone surrogate and an object whose str() raises, in a node's output: the journal
    writes the event (it must not stop), and the subscriber gets a decodable payload equal
    to the replay and to what the publisher sent before it reused the journal's bytes."""
    outputs = {"text": "a\ud800b", "odd": Unprintable(), "n": 2**70, "f": float("inf")}
    engine = make_engine(journal_config(tmp_path))
    log = engine.sink.log
    first = log.committed_seq + 1
    flow = Workflow("odd", nodes=[Node("n", lambda ctx: dict(outputs), category="provider")])
    with publishing(engine) as (_, sock):
        assert engine.submit(flow).result(10).status == "completed"
        last = log.committed_seq
        got = receive_through(sock, last)
    assert sorted(got) == list(range(first, last + 1))
    stored = {event["seq"]: event for event in all_events(engine, first)}
    completed = [seq for seq, event in stored.items() if event["type"] == "node_completed"]
    assert len(completed) == 1
    sent = msgpack.unpackb(got[completed[0]][1], raw=False, strict_map_key=True)
    assert sent["outputs"] == {"text": "a?b", "odd": "<unprintable Unprintable>",
                               "n": str(2**70), "f": float("inf")}
    assert sent == stored[completed[0]]


# -- memory ------------------------------------------------------------------------------------

def kept_slots(ring: WireRing) -> list[int]:
    return [slot[0] for slot in ring._slots if slot is not None]


def test_a_daemon_nobody_reads_from_keeps_only_the_last_commits_payloads(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """No subscription, no publisher: each append clears what is committed, so the ring
    holds at most what was committed since the last append, never the history."""
    engine = make_engine(journal_config(tmp_path), _event_ring_size=4096)
    log = engine.sink.log
    run_workflows(engine, 20, concurrent=False)
    first_run_end = log.committed_seq
    assert first_run_end > 60
    run_workflows(engine, 1, concurrent=False)
    eventually(lambda: log.committed_seq == log.appended_seq, what="all committed")
    kept = kept_slots(log.wire)
    assert kept and all(seq > first_run_end for seq in kept), kept


def test_memory_mode_never_allocates_the_ring_and_sends_what_it_sent_before(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    log = engine.sink.log
    first = log.committed_seq + 1
    reader = log.reader()
    try:
        with publishing(engine) as (_, sock):
            run_workflows(engine, 10, concurrent=True)
            last = log.committed_seq
            got = receive_through(sock, last)
        assert sorted(got) == list(range(first, last + 1))
        events = {event["seq"]: event for event in reader.read(first, last - first + 1)}
    finally:
        log.remove_reader(reader)
    assert log.wire._slots == []
    for seq, (topic, payload) in got.items():
        assert payload == pack(events[seq]) and topic == topic_of(events[seq]).encode()


def test_a_tuple_key_in_an_output_reads_back_from_the_journal_and_the_stream(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """msgpack packs a tuple key as an array, which cannot be a dict key when read back:
    the replay, the stream and in-process subscribers all get the key's string form."""
    engine = make_engine(journal_config(tmp_path))
    seen: list[dict[str, Any]] = []
    engine.subscribe(seen.append, types=["node_completed"])
    log = engine.sink.log
    first = log.committed_seq + 1
    flow = Workflow("tk", nodes=[Node("n", lambda ctx: {"m": {(1, 2): "x"}},
                                      category="provider")])
    with publishing(engine) as (_, sock):
        assert engine.submit(flow).result(10).status == "completed"
        last = log.committed_seq
        got = receive_through(sock, last, decode=unpack_lenient)
    stored = {event["seq"]: event for event in all_events(engine, first)}  # (raised before)
    [seq] = [s for s, event in stored.items() if event["type"] == "node_completed"]
    expected = {"m": {"(1, 2)": "x"}}
    assert stored[seq]["outputs"] == expected
    assert unpack_lenient(got[seq][1])["outputs"] == expected
    assert [event["outputs"] for event in seen] == [expected]
    record = engine.execution(stored[seq]["execution_id"])
    assert record is not None and record["results"]["n"] == expected



def test_a_mapping_that_is_not_a_dict_is_a_map_everywhere(make_engine: EngineFactory,
                                                           tmp_path: Path) -> None:
    """One packing for the journal, the stream and in-process copies: a read-only mapping
    in an output is a map in each (it was a map on the wire, a string in process)."""
    engine = make_engine(journal_config(tmp_path))
    seen: list[dict[str, Any]] = []
    engine.subscribe(seen.append, types=["node_completed"])
    log = engine.sink.log
    first = log.committed_seq + 1
    flow = Workflow("mp", nodes=[Node("n", lambda ctx: {"m": MappingProxyType({"a": 1})},
                                      category="provider")])
    with publishing(engine) as (_, sock):
        assert engine.submit(flow).result(10).status == "completed"
        got = receive_through(sock, log.committed_seq)
    stored = {event["seq"]: event for event in all_events(engine, first)}
    [seq] = [s for s, event in stored.items() if event["type"] == "node_completed"]
    expected = {"m": {"a": 1}}
    assert stored[seq]["outputs"] == expected
    assert unpack(got[seq][1])["outputs"] == expected
    assert [event["outputs"] for event in seen] == [expected]
