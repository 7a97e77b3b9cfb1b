"""Event types (actors.event_types), their validator, the suite-wide check of every event,
packing of odd payloads, and the ordered log's store attachment (the journal's plug)."""

from __future__ import annotations

import decimal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_type_hints

import msgpack
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import Engine, Node, Workflow
from actors.event_types import EVENT_TYPES
from actors.eventlog import EventLog
from actors.events import iso_utc, validate_event
from actors.execution import ExecutionHandle, ExecutionResult
from actors.journal import Journal
from actors.packing import pack, unpack
from tests.conftest import EngineFactory, EventProblems, Recorder
from tests.event_schema import SCHEMA_FIELDS
from transport import EventSource, Publisher

Event = dict[str, Any]
TS = "2025-01-02T03:04:05.678Z"
HEAD = {"v": 1, "seq": 7, "timestamp": TS, "execution_id": "exec_wf_0123abcd",
        "correlation_id": "exec_wf_0123abcd", "workflow_id": "wf", "bot_id": None,
        "strategy_id": "s1", "wseq": 3, "state": "NORMAL"}


VALID: list[Event] = [
    {**HEAD, "type": "execution_started", "node_count": 2, "inputs": {}, "priority": 0},
    {**HEAD, "type": "node_completed", "node_id": "a", "duration_ms": 1.5,
     "status": "success", "outputs": {"x": [1, 2]}, "attempt": 1},
    {**HEAD, "type": "execution_failed", "duration_ms": 3, "status": "interrupted",
     "error": "died", "error_type": "Interrupted"},
    {"v": 1, "seq": 8, "timestamp": TS, "type": "emergency_state_changed", "state": "HALT",
     "previous_state": "NORMAL", "reason": None, "source": "manual", "origin": "cli"},
    {"v": 1, "seq": 9, "timestamp": TS, "type": "risk_limit_exceeded", "limit": "dl",
     "kind": "daily_loss", "value": 10, "threshold": 10.0, "utilization": 1.0},
    {"v": 1, "seq": 10, "timestamp": TS, "type": "circuit_opened", "breaker": "binance",
     "failures": 5, "state": "open"},
    {"v": 1, "timestamp": TS, "type": "heartbeat", "last_seq": 10, "epoch": 1,
     "state": "NORMAL"},
    {"v": 1, "timestamp": TS, "type": "gap", "first_missing_seq": 3, "last_missing_seq": 9},
]


# -- the types -----------------------------------------------------------------------------

def test_every_contract_type_is_declared_with_its_fields_required() -> None:
    assert set(SCHEMA_FIELDS) | {"gap"} == set(EVENT_TYPES)
    for kind, fields in SCHEMA_FIELDS.items():
        cls: Any = EVENT_TYPES[kind]
        assert fields <= cls.__required_keys__, (kind, fields - cls.__required_keys__)
        assert {"v", "type", "timestamp"} <= cls.__required_keys__
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} is not documented"
        assert get_type_hints(cls)["type"].__args__ == (kind,)


def test_workflow_types_carry_the_workflow_fields() -> None:
    for kind in [k for k in SCHEMA_FIELDS if k.startswith(("node_", "execution_"))] + [
            "progress"]:
        required: Any = EVENT_TYPES[kind].__required_keys__  # type: ignore[attr-defined]
        assert set(HEAD) <= required, kind


@pytest.mark.parametrize("event", VALID, ids=lambda e: e["type"])
def test_valid_events_have_no_problems(event: Event) -> None:
    assert validate_event(event, strict=True) == []


@pytest.mark.parametrize(("event", "problem"), [
    ({**VALID[0], "node_count": True}, "'node_count' should be int"),
    ({**VALID[0], "v": 2}, "'v' should be"),
    ({k: v for k, v in VALID[1].items() if k != "outputs"}, "missing 'outputs'"),
    ({**VALID[1], "status": "ok"}, "'status' should be"),
    ({**VALID[1], "timestamp": "2025-01-02 03:04:05"}, "not ISO-8601"),
    ({**VALID[1], "execution_id": "exec_other_0123abcd",
      "correlation_id": "exec_other_0123abcd"}, "is not exec_wf_<8 hex>"),
    ({**VALID[1], "correlation_id": "x"}, "correlation_id differs"),
    ({**VALID[3], "source": "someone"}, "'source' should be"),
    ({**VALID[3], "execution_id": "exec_wf_0123abcd", "workflow_id": "wf"}, "topic"),
    ({**VALID[7], "first_missing_seq": 10}, "last_missing_seq < first_missing_seq"),
    ({"v": 1, "type": "bogus"}, "unknown type 'bogus'"),
    ({"type": None}, "unknown type None"),
    ([1, 2], "not a mapping"),
])
def test_invalid_events_are_named(event: Any, problem: str) -> None:
    problems = validate_event(event)
    assert any(problem in p for p in problems), problems


def test_strict_refuses_undeclared_fields_only() -> None:
    event = {**VALID[1], "extra": 1}
    assert validate_event(event) == []
    assert validate_event(event, strict=True) == ["node_completed: undeclared field 'extra'"]


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([*EVENT_TYPES, "x"]),
       fields=st.dictionaries(st.sampled_from(sorted({f for fs in SCHEMA_FIELDS.values()
                                                      for f in fs} | set(HEAD))),
                              st.none() | st.booleans() | st.integers() | st.floats()
                              | st.text(max_size=8) | st.lists(st.integers(), max_size=2)))
def test_the_validator_never_raises(kind: str, fields: dict[str, Any]) -> None:
    problems = validate_event({**fields, "type": kind}, strict=True)
    assert isinstance(problems, list)
    assert all(isinstance(p, str) for p in problems)


def test_the_suite_check_catches_an_invalid_event(engine: Engine,
                                                  event_problems: EventProblems) -> None:
    engine.sink.emit([{"v": 1, "type": "circuit_opened", "breaker": "b"}])  # no failures
    assert len(event_problems.found) == 1
    assert "missing 'failures'" in event_problems.found[0]
    event_problems.found.clear()  # this test's own bad event: not a failure


# -- packing -------------------------------------------------------------------------------

class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_odd_outputs_reach_subscribers_as_plain_data(engine: Engine,
                                                     recorder: Recorder) -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    odd = {"dec": decimal.Decimal("1.5"), "tuple_key": {(1, 2): "x"}, "big": 2**80,
           "surrogate": "a\ud800b", "bad": Unprintable(), "set": {3}, "cycle": cyclic}
    wf = Workflow("odd", nodes=[Node("n", lambda ctx: odd)])
    kept = engine.submit(wf).result(timeout=5).results["n"]  # the caller's copy of the dict
    assert kept is not odd and kept["dec"] is odd["dec"] and kept["bad"] is odd["bad"]
    assert kept["cycle"]["self"] is kept["cycle"] and kept["set"] is odd["set"]
    outputs = recorder.of_type("node_completed")[0]["outputs"]
    assert outputs["dec"] == "1.5" and outputs["big"] == str(2**80)
    assert outputs["tuple_key"] == {"(1, 2)": "x"}
    assert outputs["surrogate"] == "a?b" and outputs["bad"] == "<unprintable Unprintable>"
    assert outputs["set"] == [3]
    assert isinstance(outputs["cycle"], dict)


def test_pack_round_trips_plain_maps() -> None:
    event = {"v": 1, "n": [1, 2.5, None, True], "m": {"k": b"\x00"}, 1: "int key"}
    assert unpack(pack(event)) == event


# -- a durable store plugged into the log (the journal's interface) --------------------

class ListStore:
    """A store that commits when told to, from its own thread, like the journal will."""

    def __init__(self, log: EventLog) -> None:
        self.log = log
        self.events: list[Event] = []
        self.reads: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._appended = threading.Condition(self._lock)

    def append(self, events: Sequence[Event]) -> None:
        with self._lock:
            self.events.extend(dict(e) for e in events)
            self._appended.notify_all()

    def wait_type(self, kind: str, count: int) -> None:
        with self._lock:
            assert self._appended.wait_for(
                lambda: sum(e["type"] == kind for e in self.events) >= count, 5)

    def read_events(self, since_seq: int, limit: int) -> list[Event]:
        self.reads.append((since_seq, limit))
        with self._lock:
            return [dict(e) for e in self.events if e["seq"] >= since_seq][:limit]

    def commit(self) -> None:
        with self._lock:
            last = self.events[-1]["seq"] if self.events else 0
        thread = threading.Thread(target=self.log.mark_committed, args=(last,),
                                  name="store-writer")
        thread.start()
        thread.join(5)


def test_a_commit_wakes_waiters_and_hands_done_callbacks_off_the_stores_thread() -> None:
    log = EventLog()
    store = ListStore(log)
    log.attach_store(store)
    log.append([{"v": 1, "seq": 1, "type": "circuit_opened", "breaker": "b", "failures": 1,
                 "timestamp": TS}])
    ran_on: list[str] = []
    done = threading.Event()

    def callback() -> None:
        ran_on.append(threading.current_thread().name)
        done.set()

    log.when_delivered(1, callback)
    assert not log.wait_delivered(1, timeout=0.05) and not ran_on  # not committed yet
    store.commit()
    assert log.wait_delivered(1, timeout=5) and done.wait(5)
    assert ran_on == ["tradeloom-done-callbacks"]
    log.close_all(timeout=1)


class CursorMovesMeanwhileLog(EventLog):
    """`delivered()` says no once, as if the subscription thread passed the seq right after
    the supervisor looked: the watcher is then due at once, in `when_delivered`."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def delivered(self, seq: int) -> bool:
        if not self.raced:
            self.raced = True
            return False
        return super().delivered(seq)


def test_done_callbacks_due_as_the_supervisor_resolves_never_run_on_its_thread() -> None:
    """A done callback may wait for another execution or for a halt: run on the supervisor
    that resolves the handle, it would hold up what it waits for."""
    log = CursorMovesMeanwhileLog()
    log.append([{"v": 1, "seq": 1, "type": "circuit_opened", "breaker": "b", "failures": 1,
                 "timestamp": TS}])
    handle = ExecutionHandle("exec_w_00000001", "w", log)
    ran_on: list[str] = []
    ran = threading.Event()

    def on_done(_handle: ExecutionHandle) -> None:
        ran_on.append(threading.current_thread().name)
        ran.set()

    handle.add_done_callback(on_done)
    handle.resolve(ExecutionResult(execution_id="exec_w_00000001", workflow_id="w",
                                   status="completed"), seq=1)  # (this thread: the supervisor)
    assert log.raced and ran.wait(5)
    assert ran_on == ["tradeloom-done-callbacks"]
    log.close_all(timeout=1)


def test_with_a_store_readers_see_only_committed_events(make_engine: EngineFactory) -> None:
    engine = make_engine()
    store = ListStore(engine.sink.log)
    engine.sink.log.attach_store(store)
    rec = Recorder().follow(engine)
    wf = Workflow("stored", nodes=[Node("a", lambda ctx: 1), Node("b", lambda ctx: 2)])
    handle = engine.submit(wf)
    store.wait_type("execution_completed", 1)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.2)  # ended, but its terminal event is not committed yet
    assert engine.status()["last_seq"] == 0
    assert rec.subscription is not None and rec.subscription.next_seq == 1
    assert not handle.done()
    store.commit()
    assert handle.result(timeout=5).status == "completed"
    assert [e["seq"] for e in rec.events] == [e["seq"] for e in store.events]
    assert engine.status()["last_seq"] == store.events[-1]["seq"]


def test_a_cursor_behind_the_ring_reads_from_the_store(make_engine: EngineFactory) -> None:
    engine = make_engine(_event_ring_size=8)
    store = ListStore(engine.sink.log)
    engine.sink.log.attach_store(store)
    blocked, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def slow(event: Event) -> None:
        seen.append(event.get("seq", -1))
        blocked.set()
        release.wait(10)

    sub = engine.subscribe(slow)
    wf = Workflow("behind", nodes=[Node("a", lambda ctx: 1)])
    handles = [engine.submit(wf)]
    store.wait_type("execution_completed", 1)
    store.commit()
    assert blocked.wait(5)
    for _ in range(5):  # far more than 8 events while the subscriber is stuck on seq 1
        handles.append(engine.submit(wf))
    store.wait_type("execution_completed", 6)
    store.commit()
    release.set()
    for handle in handles:
        assert handle.result(timeout=5).status == "completed"
    assert seen == list(range(1, store.events[-1]["seq"] + 1))
    assert sub.gaps == 0 and store.reads


def test_the_journal_plugs_in_as_the_logs_store(make_engine: EngineFactory,
                                                tmp_path: Path) -> None:
    """The wiring the journal issue needs: `attach_store(journal)` and the journal's
    `on_commit` marking the log; subscribers see committed events only, and a done callback
    made due by a commit never runs on the journal's writer thread."""
    engine = make_engine(_event_ring_size=16)
    journal = Journal.open(tmp_path)
    errors: list[BaseException] = []
    try:
        engine.sink.log.attach_store(journal)
        journal.start(on_commit=engine.sink.log.mark_committed, on_error=errors.append)
        ran_on: list[str] = []
        wf = Workflow("journaled", nodes=[Node("a", lambda ctx: 1), Node("b", lambda ctx: 2)])
        handles = [engine.submit(wf) for _ in range(10)]  # no subscriber yet: commits decide
        handles[0].add_done_callback(lambda h: ran_on.append(threading.current_thread().name))
        rec = Recorder().follow(engine)
        handles += [engine.submit(wf) for _ in range(10)]
        for handle in handles:
            assert handle.result(timeout=10).status == "completed"
        assert journal.last_committed_seq() >= engine.status()["last_seq"] > 0
        seqs = [e["seq"] for e in rec.events]
        assert seqs == list(range(seqs[0], engine.status()["last_seq"] + 1))
        assert ran_on and ran_on[0] != "tradeloom-journal"
        assert [e["seq"] for e in journal.read_events(seqs[0], 10_000)] == seqs
        assert not errors
    finally:
        journal.close()


def test_the_publisher_reads_the_in_memory_log_through_a_reader(
        make_engine: EngineFactory) -> None:
    """The publisher (transport) as a cursor over the same log, in memory mode: it sends
    every event, in order."""
    engine = make_engine()
    reader = engine.sink.log.reader()
    source: EventSource = reader  # the publisher's protocol, checked by mypy
    publisher = Publisher("tcp://127.0.0.1:*", source, heartbeat_s=30.0)
    publisher.start()
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.SUB)
    sock.linger = 0
    sock.setsockopt(zmq.SUBSCRIBE, b"workflow/")
    try:
        sock.connect(publisher.endpoint)
        # Live once the publisher has seen the subscription (a heartbeat answers it).
        while True:
            sock.setsockopt(zmq.SUBSCRIBE, b"system/heartbeat")
            assert sock.poll(5000)
            if sock.recv_multipart()[0] == b"system/heartbeat":
                break
        sock.setsockopt(zmq.UNSUBSCRIBE, b"system/heartbeat")
        wf = Workflow("published", nodes=[Node("a", lambda ctx: 1)])
        handles = [engine.submit(wf) for _ in range(50)]
        assert all(h.result(timeout=10).status == "completed" for h in handles)
        last = engine.status()["last_seq"]
        assert publisher.wait_sent(last, 10)
        seqs: list[int] = []
        while len(seqs) < last:
            assert sock.poll(5000), f"{len(seqs)} of {last} events received"
            topic, payload = sock.recv_multipart()
            if topic != b"system/heartbeat":
                seqs.append(msgpack.unpackb(payload, raw=False)["seq"])
        assert seqs == list(range(1, last + 1))
        assert publisher.stats()["sent"] == last and reader.missed == 0
    finally:
        sock.close()
        publisher.stop()
        reader.close()


def test_a_reader_behind_the_ring_skips_what_is_gone_and_counts_it() -> None:
    log = EventLog(ring_size=8)
    reader = log.reader()
    for seq in range(1, 21):
        log.append([{"v": 1, "seq": seq, "type": "circuit_opened", "breaker": "b",
                     "failures": 1, "timestamp": TS}])
    assert reader.wait_committed(0, 1) == 20
    assert [e["seq"] for e in reader.read(1, 100)] == list(range(13, 21))
    assert reader.missed == 12
    assert reader.wait_committed(20, 0.01) == 20  # nothing new: returns at the timeout
    reader.close()


@settings(max_examples=300)
@given(st.lists(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False), min_size=1,
                max_size=20))
def test_iso_utc_formats_each_instant_as_the_plain_formula_does(walls: list[float]) -> None:
    """`iso_utc` keeps the last second's text: a run of instants, some in the same second,
    each formats as the plain formula would."""
    for wall in [*walls, *(w + 0.0005 for w in walls)]:
        second = int(wall)
        expected = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
                    + f".{int((wall - second) * 1000):03d}Z")
        assert iso_utc(wall) == expected
