"""The core engine (protocol, README): DAG order and parallelism, conditions, fail-fast,
cancellation, admission, the event stream's fields and order, subscribers, the node
context, the actor-message API, status and shutdown.

Real engines, real pykka actors and threads: nothing of the engine is mocked. Every wait is
on an event, a condition, a barrier or an actor reply, with a timeout; no sleep is used to
synchronise (a node may sleep to simulate work).

"Settling" below is `engine.supervisor_stats()`: an `ask` to every supervisor, answered
only after everything already in its inbox (a late `NodeDone`, a `Tick`) has been handled.
"""

from __future__ import annotations

import ctypes
import gc
import os
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from actors import (
    Config,
    Engine,
    EngineStopped,
    ExecutionHandle,
    ExecutionResult,
    Node,
    NodeContext,
    NotFound,
    UnknownWorkflow,
    Workflow,
)
from actors.machine import Execution
from actors.messages import Cancel, GetStatus, Submit
from tests.conftest import Recorder
from tests.event_schema import SCHEMA_FIELDS

EngineFactory = Callable[..., Engine]
Event = dict[str, Any]

TERMINAL_STATUS = {
    "execution_completed": {"completed"},
    "execution_failed": {"failed", "interrupted"},
    "execution_halted": {"halted"},
    "execution_cancelled": {"cancelled"},
}
TERMINAL = set(TERMINAL_STATUS)
CATEGORIES = {"provider", "condition", "action", "transform"}
SKIP_REASONS = {"condition_false", "upstream_failed", "halted", "reduce_only", "circuit_open",
                "cancelled"}
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
#: The protocol's fields per workflow event type (beyond the common ones).
FIELDS = {kind: fields for kind, fields in SCHEMA_FIELDS.items()
          if kind.startswith(("execution_", "node_")) or kind == "progress"}
WORKFLOW_FIELDS = {"v", "seq", "type", "timestamp", "execution_id", "correlation_id",
                   "workflow_id", "bot_id", "strategy_id", "wseq"}


# -- helpers -------------------------------------------------------------------------------

def settle(engine: Engine, rounds: int = 3) -> None:
    """Every supervisor has handled everything that was in its inbox before this call."""
    for _ in range(rounds):
        engine.supervisor_stats()


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_event(event: Event) -> None:
    """One workflow event has every field the protocol gives its type, well-formed."""
    kind = event["type"]
    assert kind in FIELDS, f"unknown workflow event type {kind!r}"
    missing = (WORKFLOW_FIELDS | FIELDS[kind]) - set(event)
    assert not missing, f"{kind} lacks {sorted(missing)}: {event}"
    assert event["v"] == 1
    assert type(event["seq"]) is int and event["seq"] >= 1
    assert type(event["wseq"]) is int and event["wseq"] >= 1
    assert TIMESTAMP.fullmatch(event["timestamp"]), event["timestamp"]
    datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")  # a real date and time
    wf = event["workflow_id"]
    assert ID.fullmatch(wf)
    assert re.fullmatch(rf"exec_{re.escape(wf)}_[0-9a-f]{{8}}", event["execution_id"]), event
    assert event["correlation_id"] == event["execution_id"]
    if "node_id" in FIELDS[kind]:
        assert ID.fullmatch(event["node_id"])
    if "attempt" in FIELDS[kind]:
        assert type(event["attempt"]) is int and event["attempt"] >= 1
    if "duration_ms" in FIELDS[kind]:
        assert is_number(event["duration_ms"]) and event["duration_ms"] >= 0
    if kind == "execution_started":
        assert type(event["node_count"]) is int and event["node_count"] >= 1
        assert isinstance(event["inputs"], dict)
    elif kind == "node_started":
        assert event["node_category"] in CATEGORIES
        assert isinstance(event["node_name"], str) and event["node_name"]
    elif kind == "node_completed":
        assert event["status"] == "success"
    elif kind == "node_failed":
        assert isinstance(event["final"], bool)
        assert isinstance(event["error"], str) and event["error"]
        assert isinstance(event["error_type"], str) and event["error_type"]
    elif kind == "node_retrying":
        assert is_number(event["delay_ms"]) and event["delay_ms"] >= 0
        assert event["attempt"] >= 2
    elif kind == "node_skipped":
        assert event["reason"] in SKIP_REASONS, event
    elif kind == "progress":
        for key in ("nodes_completed", "nodes_total", "nodes_in_progress"):
            assert type(event[key]) is int and event[key] >= 0
        assert event["nodes_completed"] <= event["nodes_total"]
        assert event["eta_ms"] is None or (is_number(event["eta_ms"]) and event["eta_ms"] >= 0)
    else:
        assert event["status"] in TERMINAL_STATUS[kind], event
        if kind == "execution_completed":
            assert isinstance(event["results"], dict)
        else:
            assert isinstance(event["error"], str) and event["error"]
            assert isinstance(event["error_type"], str) and event["error_type"]


def check_stream(events: list[Event], *, from_start: bool = True) -> None:
    """The whole stream one unfiltered subscriber saw: the protocol's order rules.

    seq gapless (+1, from 1 when subscribed before the first event), wseq 1, 2, 3 per
    workflow, timestamps never going back, every field of every event, and per execution:
    execution_started first, each node's node_started before its node_completed/node_failed,
    exactly one terminal event, and it is the last.
    """
    seqs = [e["seq"] for e in events]
    if seqs:
        first = 1 if from_start else seqs[0]
        assert seqs == list(range(first, first + len(seqs))), "seq is not gapless +1"
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps), "timestamps go back in seq order"
    wseqs: dict[str, list[int]] = {}
    per_execution: dict[str, list[Event]] = {}
    for event in events:
        if "execution_id" not in event:
            continue
        check_event(event)
        wseqs.setdefault(event["workflow_id"], []).append(event["wseq"])
        per_execution.setdefault(event["execution_id"], []).append(event)
    for workflow_id, numbers in wseqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"wseq of {workflow_id}: {numbers}"
    for execution_id, evs in per_execution.items():
        check_execution(execution_id, evs)


def check_execution(execution_id: str, evs: list[Event]) -> None:
    types = [e["type"] for e in evs]
    assert types[0] == "execution_started", (execution_id, types)
    terminals = [t for t in types if t in TERMINAL]
    assert len(terminals) == 1, (execution_id, types)
    assert types[-1] in TERMINAL, f"events after the terminal one: {types}"
    running: set[tuple[str, int]] = set()
    for e in evs:
        key = (e.get("node_id", ""), e.get("attempt", 0))
        if e["type"] == "node_started":
            assert key not in running, f"{key} started twice"
            running.add(key)
        elif e["type"] in ("node_completed", "node_failed"):
            assert key in running, f"{e['type']} of {key} without its node_started: {types}"
            running.discard(key)
    for e in evs[1:]:
        assert e["bot_id"] == evs[0]["bot_id"] and e["strategy_id"] == evs[0]["strategy_id"]


def check_dag_order(workflow: Workflow, evs: list[Event]) -> None:
    """A node's node_started comes only after the node_completed of every dependency."""
    position = {(e["type"], e.get("node_id")): i for i, e in enumerate(evs)}
    for node in workflow.nodes:
        started = position.get(("node_started", node.id))
        if started is None:
            continue
        for dep in node.depends_on:
            done = position.get(("node_completed", dep))
            assert done is not None and done < started, (
                f"{node.id} started at {started} before {dep} completed at {done}")


def node_ids(evs: Iterable[Event], kind: str) -> list[str]:
    return [e["node_id"] for e in evs if e["type"] == kind]


class Notes:
    """A thread-safe record of the contexts node functions were called with."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: dict[str, list[NodeContext]] = {}

    def note(self, ctx: NodeContext) -> None:
        with self._lock:
            self.calls.setdefault(ctx.node_id, []).append(ctx)

    def called(self, node_id: str) -> int:
        with self._lock:
            return len(self.calls.get(node_id, ()))

    def ctx(self, node_id: str) -> NodeContext:
        with self._lock:
            return self.calls[node_id][-1]


def echo(notes: Notes, value: Any = None) -> Callable[[NodeContext], Any]:
    def fn(ctx: NodeContext) -> Any:
        notes.note(ctx)
        return {"node": ctx.node_id} if value is None else value
    return fn


def blocker(gate: threading.Event, timeout: float = 20.0) -> Callable[[NodeContext], str]:
    def hold(ctx: NodeContext) -> str:
        gate.wait(timeout)
        return "released"
    return hold


def started_nodes(rec: Recorder, execution_id: str, count: int = 1) -> None:
    rec.wait_for(lambda evs: sum(e["type"] == "node_started"
                                 and e.get("execution_id") == execution_id
                                 for e in evs) >= count)


# -- DAG order and parallelism -------------------------------------------------------------

def test_node_starts_only_after_every_dependency_completed(engine: Engine,
                                                           recorder: Recorder) -> None:
    notes = Notes()

    def slow_b(ctx: NodeContext) -> str:
        notes.note(ctx)
        time.sleep(0.02)  # simulated work: the slower branch d has to wait for
        return "b"

    wf = Workflow("order", nodes=[
        Node("a", echo(notes, "a"), category="provider"),
        Node("b", slow_b, depends_on=["a"]),
        Node("c", echo(notes, "c"), depends_on=["a"]),
        Node("d", echo(notes, "d"), depends_on=["b", "c"]),
        Node("e", echo(notes, "e"), depends_on=["a", "d"]),
        Node("f", echo(notes, "f")),
    ])
    handles = [engine.submit(wf, inputs={"i": i}) for i in range(10)]
    results = [h.result(timeout=10) for h in handles]
    assert all(r.status == "completed" for r in results)
    assert results[0].results == {"a": "a", "b": "b", "c": "c", "d": "d", "e": "e", "f": "f"}
    for h in handles:
        check_dag_order(wf, recorder.for_execution(h.execution_id))
    check_stream(recorder.events)
    # What a node sees upstream is what its dependencies returned.
    assert notes.ctx("d").upstream["b"] == "b" and notes.ctx("d").upstream["c"] == "c"
    assert notes.ctx("e").upstream["d"] == "d" and notes.ctx("e").upstream["a"] == "a"


@pytest.mark.parametrize("width", [2, 6])
def test_nodes_without_a_path_between_them_run_at_the_same_time(
        engine: Engine, recorder: Recorder, width: int) -> None:
    """Each branch waits at a barrier for all the others: they can only all pass if they
    are running at the same time. Run one after another, the barrier breaks."""
    barrier = threading.Barrier(width, timeout=5)

    def meet(ctx: NodeContext) -> int:
        return barrier.wait()

    branches = [f"branch{i}" for i in range(width)]
    wf = Workflow(f"fanout{width}", nodes=[
        Node("root", lambda ctx: 1, category="provider"),
        *(Node(b, meet, depends_on=["root"]) for b in branches),
        Node("join", lambda ctx: sorted(ctx.upstream[b] for b in branches),
             depends_on=branches),
    ])
    result = engine.submit(wf).result(timeout=10)
    assert result.status == "completed", (result.error_type, result.error)
    assert result.results["join"] == list(range(width))  # every arrival index, once
    evs = recorder.for_execution(result.execution_id)
    first_done = min(i for i, e in enumerate(evs) if e["type"] == "node_completed"
                     and e["node_id"] in branches)
    assert set(node_ids(evs[:first_done], "node_started")) >= set(branches)
    check_dag_order(wf, evs)


def test_separate_executions_run_at_the_same_time(engine: Engine) -> None:
    barrier = threading.Barrier(3, timeout=5)
    wf = Workflow("meet", nodes=[Node("meet", lambda ctx: barrier.wait())])
    handles = [engine.submit(wf) for _ in range(3)]
    results = [h.result(timeout=10) for h in handles]
    assert [r.status for r in results] == ["completed"] * 3
    assert sorted(r.results["meet"] for r in results) == [0, 1, 2]


# -- conditions ----------------------------------------------------------------------------

def test_false_condition_skips_everything_downstream_and_the_execution_completes(
        engine: Engine, recorder: Recorder) -> None:
    notes = Notes()
    wf = Workflow("gated", nodes=[
        Node("price", echo(notes, {"price": 1.0}), category="provider"),
        Node("worth_it", lambda ctx: ctx.upstream["price"]["price"] > 5, category="condition",
             depends_on=["price"]),
        Node("trade", echo(notes), category="action", depends_on=["worth_it"]),
        Node("report", echo(notes), depends_on=["trade"]),
        Node("other", echo(notes, "other"), depends_on=["price"]),
        Node("join", echo(notes), depends_on=["trade", "other"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    assert result.results == {"price": {"price": 1.0}, "worth_it": False, "other": "other"}
    evs = recorder.for_execution(result.execution_id)
    skipped = {e["node_id"]: e["reason"] for e in evs if e["type"] == "node_skipped"}
    assert skipped == {"trade": "condition_false", "report": "condition_false",
                       "join": "condition_false"}
    assert not {"trade", "report", "join"} & set(node_ids(evs, "node_started"))
    assert notes.called("trade") == notes.called("report") == notes.called("join") == 0
    assert evs[-1]["type"] == "execution_completed"
    assert result.nodes["trade"]["status"] == "skipped"
    check_stream(recorder.events)


def test_true_condition_lets_downstream_run(engine: Engine) -> None:
    wf = Workflow("open_gate", nodes=[
        Node("check", lambda ctx: True, category="condition"),
        Node("act", lambda ctx: "done", category="action", depends_on=["check"]),
    ])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    assert result.results == {"check": True, "act": "done"}


# -- fail fast -----------------------------------------------------------------------------

def test_fail_fast_skips_what_did_not_start_cancels_the_running_sibling_and_drops_its_late_result(
        engine: Engine, recorder: Recorder) -> None:
    slow_running = threading.Event()
    release = threading.Event()
    returned = threading.Event()
    notes = Notes()

    def slow(ctx: NodeContext) -> dict[str, bool]:
        notes.note(ctx)
        slow_running.set()
        try:
            release.wait(10)  # deaf to ctx.cancelled: it returns when the test says so
            return {"late": True}
        finally:
            returned.set()

    def boom(ctx: NodeContext) -> None:
        assert slow_running.wait(5)
        raise ValueError("boom")

    wf = Workflow("failfast", nodes=[
        Node("slow", slow, category="provider"),
        Node("boom", boom, category="provider"),
        Node("after_boom", echo(notes), depends_on=["boom"]),
        Node("after_slow", echo(notes), depends_on=["slow"]),
        Node("join", echo(notes), depends_on=["slow", "boom"]),
    ])
    try:
        handle = engine.submit(wf)
        result = handle.result(timeout=5)
        assert result.status == "failed"
        assert result.error_type == "ValueError" and "boom" in (result.error or "")
        assert "slow" not in result.results
        # The running sibling is told to cancel.
        assert notes.ctx("slow").cancelled.wait(5)
        assert not returned.is_set()
    finally:
        release.set()
    assert returned.wait(5)
    settle(engine)  # the late NodeDone has been handled

    evs = recorder.for_execution(handle.execution_id)
    types = [e["type"] for e in evs]
    assert types[-1] == "execution_failed" and types.count("execution_failed") == 1, types
    terminal = evs[-1]
    assert terminal["status"] == "failed" and terminal["error_type"] == "ValueError"
    assert not [e for e in recorder.events if e.get("execution_id") == handle.execution_id
                and e["seq"] > terminal["seq"]], "events after the terminal event"
    failed = [e for e in evs if e["type"] == "node_failed"]
    assert [(e["node_id"], e["final"], e["error_type"]) for e in failed] == [
        ("boom", True, "ValueError")]
    assert "slow" in node_ids(evs, "node_started")
    assert "slow" not in node_ids(evs, "node_completed"), "a late result was published"
    skipped = {e["node_id"]: e["reason"] for e in evs if e["type"] == "node_skipped"}
    assert set(skipped) == {"after_boom", "after_slow", "join"}
    assert skipped["after_boom"] == skipped["join"] == "upstream_failed"
    assert notes.called("after_boom") == notes.called("after_slow") == notes.called("join") == 0
    assert handle.result(timeout=0).status == "failed"
    assert result.nodes["slow"]["status"] == "cancelled"
    assert result.nodes["boom"]["status"] == "failed"
    check_stream(recorder.events)


def test_fail_fast_does_not_disturb_other_executions(engine: Engine) -> None:
    ok = Workflow("fine", nodes=[Node("x", lambda ctx: 1)])
    bad = Workflow("broken", nodes=[Node("x", lambda ctx: 1 / 0)])
    handles = [engine.submit(ok if i % 2 else bad) for i in range(20)]
    statuses = Counter(h.result(timeout=5).status for h in handles)
    assert statuses == {"completed": 10, "failed": 10}
    assert {h.result().error_type for h in handles[::2]} == {"ZeroDivisionError"}


# -- cancel --------------------------------------------------------------------------------

def test_cancel_running_execution(engine: Engine, recorder: Recorder) -> None:
    notes = Notes()
    returned = threading.Event()

    def hold(ctx: NodeContext) -> str:
        notes.note(ctx)
        try:
            ctx.cancelled.wait(10)  # a cooperative node: it stops when told to
            return "stopped"
        finally:
            returned.set()

    wf = Workflow("cancellable", nodes=[
        Node("hold", hold, category="provider"),
        Node("next", echo(notes), depends_on=["hold"]),
    ])
    handle = engine.submit(wf)
    started_nodes(recorder, handle.execution_id)
    assert engine.cancel(handle.execution_id) == "cancelled"
    result = handle.result(timeout=5)
    assert result.status == "cancelled"
    assert notes.ctx("hold").cancelled.is_set()
    assert returned.wait(5)
    settle(engine)  # hold's return after the cancel has been handled
    evs = recorder.for_execution(handle.execution_id)
    assert evs[-1]["type"] == "execution_cancelled"
    assert evs[-1]["status"] == "cancelled" and evs[-1]["error_type"] == "Cancelled"
    assert [e["type"] for e in evs].count("execution_cancelled") == 1
    assert "hold" not in node_ids(evs, "node_completed")
    assert {e["node_id"]: e["reason"] for e in evs if e["type"] == "node_skipped"} == {
        "next": "cancelled"}
    assert notes.called("next") == 0
    # Asking again reports how it ended.
    assert engine.cancel(handle.execution_id) == "cancelled"
    check_stream(recorder.events)


def test_cancel_through_an_actor_message(engine: Engine, recorder: Recorder) -> None:
    gate = threading.Event()
    wf = Workflow("cancel_msg", nodes=[Node("hold", blocker(gate))])
    try:
        handle = engine.submit(wf)
        started_nodes(recorder, handle.execution_id)
        assert engine.ref.ask(Cancel(handle.execution_id), timeout=5) == {"status": "cancelled"}
        assert handle.result(timeout=5).status == "cancelled"
    finally:
        gate.set()


def test_cancel_queued_execution(make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    rec = Recorder()
    rec.follow(engine)
    gate = threading.Event()
    notes = Notes()
    busy = Workflow("busy", nodes=[Node("hold", blocker(gate))])
    waiting = Workflow("waiting", nodes=[Node("w", echo(notes))])
    try:
        first = engine.submit(busy)
        started_nodes(rec, first.execution_id)
        queued = engine.submit(waiting)
        assert not queued.done()
        status = engine.status()
        assert (status["running"], status["queued"]) == (1, 1)
        assert engine.cancel(queued.execution_id) == "cancelled"
        result = queued.result(timeout=5)
        assert result.status == "cancelled"
        assert engine.status()["queued"] == 0
    finally:
        gate.set()
    assert first.result(timeout=5).status == "completed"
    assert notes.called("w") == 0
    evs = rec.for_execution(queued.execution_id)
    # Ended while queued: its execution_started right before its terminal event.
    assert [e["type"] for e in evs] == ["execution_started", "execution_cancelled"], evs
    assert evs[-1]["status"] == "cancelled"
    # The slot accounting survived: a new execution runs, and nothing is left over.
    assert engine.submit(waiting).result(timeout=5).status == "completed"
    status = engine.status()
    assert (status["running"], status["queued"]) == (0, 0)
    check_stream(rec.events)


def test_cancel_of_a_finished_execution_reports_its_status(engine: Engine) -> None:
    wf = Workflow("quick", nodes=[Node("x", lambda ctx: 1)])
    result = engine.submit(wf).result(timeout=5)
    assert engine.cancel(result.execution_id) == "completed"


def test_cancel_of_a_refused_execution_reports_refused(engine: Engine) -> None:
    wf = Workflow("quick", nodes=[Node("x", lambda ctx: 1)])
    engine.halt("test")
    refused = engine.submit(wf).result(timeout=5)
    assert refused.status == "refused"
    assert engine.cancel(refused.execution_id) == "refused"


def test_cancel_of_an_unknown_execution_raises_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.cancel("exec_nothing_0badf00d")


# -- admission -----------------------------------------------------------------------------

def test_admission_limits_running_queues_by_priority_and_refuses_when_full(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"max_concurrent_executions": 1,
                                     "max_queued_executions": 4}})
    rec = Recorder()
    rec.follow(engine)
    gate = threading.Event()
    busy = Workflow("busy", nodes=[Node("hold", blocker(gate))])
    work = Workflow("work", nodes=[Node("w", lambda ctx: ctx.inputs["name"])])
    try:
        first = engine.submit(busy)
        started_nodes(rec, first.execution_id)
        queued = {name: engine.submit(work, inputs={"name": name}, priority=priority)
                  for name, priority in [("low", 1), ("high", 5), ("mid_a", 3), ("mid_b", 3)]}
        assert not any(h.done() for h in queued.values())
        status = engine.status()
        assert (status["running"], status["queued"]) == (1, 4)

        refused = engine.submit(work, inputs={"name": "too_many"}, priority=99)
        assert refused.done(), "a refused submit comes back already resolved"
        result = refused.result(timeout=0)
        assert result.status == "refused" and result.error_type == "Overloaded"
        assert not rec.for_execution(refused.execution_id)
        assert engine.status()["queued"] == 4
    finally:
        gate.set()
    results = {name: h.result(timeout=5) for name, h in queued.items()}
    assert {r.status for r in results.values()} == {"completed"}
    starts = [e["execution_id"] for e in rec.events if e["type"] == "execution_started"]
    by_id = {h.execution_id: name for name, h in queued.items()}
    assert [by_id.get(s, "first") for s in starts] == ["first", "high", "mid_a", "mid_b", "low"]
    status = engine.status()
    assert (status["running"], status["queued"]) == (0, 0)
    check_stream(rec.events)


def test_submit_in_halt_is_refused(engine: Engine) -> None:
    wf = Workflow("halted_submit", nodes=[Node("x", lambda ctx: 1)])
    engine.halt("test")
    result = engine.submit(wf).result(timeout=0)
    assert result.status == "refused" and result.error_type == "Halted"
    engine.resume("test over")
    assert engine.submit(wf).result(timeout=5).status == "completed"


@pytest.mark.slow
def test_a_thousand_executions_in_flight_at_once_all_complete(engine: Engine,
                                                              recorder: Recorder) -> None:
    gate = threading.Event()
    wf = Workflow("crowd", nodes=[
        Node("wait", blocker(gate, 30), category="provider"),
        Node("after", lambda ctx: ctx.inputs["i"], depends_on=["wait"]),
    ])
    try:
        handles = [engine.submit(wf, inputs={"i": i}) for i in range(1000)]
        recorder.wait_type("execution_started", 1000, timeout=30)
        status = engine.status()
        assert (status["running"], status["queued"]) == (1000, 0)
        assert not any(h.done() for h in handles)
    finally:
        gate.set()
    results = [h.result(timeout=30) for h in handles]
    assert [r.status for r in results] == ["completed"] * 1000
    assert [r.results["after"] for r in results] == list(range(1000))
    assert len({r.execution_id for r in results}) == 1000
    check_stream(recorder.events)
    assert engine.status()["running"] == 0


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _live_objects(*classes: type) -> int:
    gc.collect()
    return sum(isinstance(o, classes) for o in gc.get_objects())


#: Executions the memory test runs after its warm-up, and the RSS growth it allows: a leak
#: of ~175 bytes per execution shows. (bench/soak.py is the long run: RSS over minutes.)
MEMORY_RUN = 30_000
MEMORY_GROWTH_MIB = 5


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_memory_returns_near_its_start_after_thirty_thousand_executions(
        engine: Engine) -> None:
    """After a warm-up batch (pools, caches and heaps at their working size), 30,000 more
    finished executions leave neither their records alive nor the process much larger."""
    seen = [0]

    def count(event: Event) -> None:
        seen[0] += 1

    engine.subscribe(count, types={"execution_completed"})
    wf = Workflow("soak", nodes=[
        Node("price", lambda ctx: {"price": 1.0}, category="provider"),
        Node("double", lambda ctx: ctx.upstream["price"]["price"] * 2, depends_on=["price"]),
    ])
    classes = (Execution, ExecutionHandle, ExecutionResult, NodeContext)

    def run(total: int, window: int = 2000) -> None:
        for _ in range(total // window):
            handles = [engine.submit(wf) for _ in range(window)]
            for h in handles:
                assert h.result(timeout=30).status == "completed"

    libc = ctypes.CDLL("libc.so.6")
    run(10_000)
    objects_before = _live_objects(*classes)
    libc.malloc_trim(0)
    rss_before = _rss_bytes()
    run(MEMORY_RUN)
    objects_after = _live_objects(*classes)
    libc.malloc_trim(0)
    rss_after = _rss_bytes()
    assert seen[0] == 10_000 + MEMORY_RUN
    # A leak of one record per execution would leave 30,000 of them alive.
    assert objects_after - objects_before < 3_000, (objects_before, objects_after)
    growth_mb = (rss_after - rss_before) / 2**20
    assert growth_mb < MEMORY_GROWTH_MIB, (
        f"RSS grew {growth_mb:.1f} MiB over {MEMORY_RUN:,} executions")


def test_workflows_built_per_execution_are_not_kept_alive(engine: Engine) -> None:
    """A program may build its workflow afresh for every submit (parameters baked in).
    Once those executions are over and out of the recent-results window, their nodes must
    be free: an engine that keeps every Node it ever ran grows without bound."""
    def build() -> Workflow:
        return Workflow("built_each_time", nodes=[
            Node("price", lambda ctx: 1.0, category="provider"),
            Node("double", lambda ctx: ctx.upstream["price"] * 2, depends_on=["price"]),
        ])

    def run(total: int) -> None:
        handles = [engine.submit(build()) for _ in range(total)]
        for h in handles:
            assert h.result(timeout=30).status == "completed"

    run(2000)  # past the engine's window of recent results
    nodes_before = _live_objects(Node)
    run(6000)  # 12,000 more Node objects built and finished with
    nodes_after = _live_objects(Node)
    assert nodes_after - nodes_before < 2000, (nodes_before, nodes_after)


def test_an_output_is_freed_once_its_caller_drops_the_result(engine: Engine) -> None:
    """The engine keeps no finished execution's outputs: a node that returns a big object
    (a DataFrame, a book snapshot) must not have a thousand of them held by the engine
    after their callers are done with them (it kept its last 1,000 results)."""
    class Snapshot:
        pass

    made: list[weakref.ref[Snapshot]] = []

    def snapshot(ctx: NodeContext) -> Snapshot:
        value = Snapshot()
        made.append(weakref.ref(value))
        return value

    wf = Workflow("snapshots", nodes=[Node("book", snapshot, category="provider")])
    for _ in range(3):
        assert engine.submit(wf).result(timeout=10).status == "completed"
    assert len(made) == 3
    # The last one too: pykka's actor loops keep their last envelope until the next message,
    # so an idle actor held its last run (and the run's execution, every output) until then.
    deadline = time.monotonic() + 5
    while any(ref() is not None for ref in made) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert [ref() is None for ref in made] == [True, True, True]


# -- the event stream ----------------------------------------------------------------------

def test_every_event_carries_the_contract_fields_in_contract_order(engine: Engine,
                                                                   recorder: Recorder) -> None:
    def fetch(ctx: NodeContext) -> dict[str, float]:
        return {"price": 50_000.0}

    def worth_it(ctx: NodeContext) -> bool:
        return bool(ctx.upstream["fetch"]["price"] > ctx.inputs["threshold"])

    def trade(ctx: NodeContext) -> dict[str, str]:
        return {"order": ctx.idempotency_key}

    def book(ctx: NodeContext) -> str:
        return "booked"

    wf = Workflow("contract.wf-1", nodes=[
        Node("fetch", fetch, category="provider"),
        Node("worth_it", worth_it, category="condition", depends_on=["fetch"]),
        Node("trade", trade, category="action", depends_on=["worth_it"]),
        Node("book", book, name="bookkeeping", depends_on=["trade"]),
    ])
    wall_before = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    handle = engine.submit(wf, inputs={"threshold": 10.0}, bot_id="bot_001",
                           strategy_id="arb_v1")
    result = handle.result(timeout=5)
    wall_after = datetime.now(UTC).replace(tzinfo=None)
    assert result.status == "completed"
    eid = handle.execution_id
    assert re.fullmatch(r"exec_contract\.wf-1_[0-9a-f]{8}", eid)

    evs = recorder.for_execution(eid)
    assert evs == recorder.events  # nothing else happened
    check_stream(evs)
    assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
    assert [e["wseq"] for e in evs] == list(range(1, len(evs) + 1))
    for e in evs:
        assert (e["workflow_id"], e["bot_id"], e["strategy_id"]) == (
            "contract.wf-1", "bot_001", "arb_v1")
        assert e["execution_id"] == e["correlation_id"] == eid
        stamp = datetime.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert wall_before <= stamp <= wall_after

    # A chain: the whole sequence is fixed (progress events aside).
    assert [(e["type"], e.get("node_id")) for e in evs if e["type"] != "progress"] == [
        ("execution_started", None),
        ("node_started", "fetch"), ("node_completed", "fetch"),
        ("node_started", "worth_it"), ("node_completed", "worth_it"),
        ("node_started", "trade"), ("node_completed", "trade"),
        ("node_started", "book"), ("node_completed", "book"),
        ("execution_completed", None),
    ]
    started = evs[0]
    assert started["node_count"] == 4 and started["inputs"] == {"threshold": 10.0}
    node_started = {e["node_id"]: e for e in evs if e["type"] == "node_started"}
    assert {k: (e["node_name"], e["node_category"], e["attempt"])
            for k, e in node_started.items()} == {
        "fetch": ("fetch", "provider", 1), "worth_it": ("worth_it", "condition", 1),
        "trade": ("trade", "action", 1), "book": ("bookkeeping", "transform", 1)}
    completed = {e["node_id"]: e for e in evs if e["type"] == "node_completed"}
    assert {k: (e["outputs"], e["status"], e["attempt"]) for k, e in completed.items()} == {
        "fetch": ({"price": 50_000.0}, "success", 1), "worth_it": (True, "success", 1),
        "trade": ({"order": f"{eid}:trade"}, "success", 1), "book": ("booked", "success", 1)}
    progress = [e for e in evs if e["type"] == "progress"]
    assert progress, "no progress events"
    done_counts = [p["nodes_completed"] for p in progress]
    assert done_counts == sorted(done_counts) and set(done_counts) <= {1, 2, 3, 4}
    assert {p["nodes_total"] for p in progress} == {4}
    assert all(p["nodes_in_progress"] in (0, 1) for p in progress)
    terminal = evs[-1]
    assert terminal["status"] == "completed"
    assert terminal["results"] == dict(result.results) == {
        "fetch": {"price": 50_000.0}, "worth_it": True, "trade": {"order": f"{eid}:trade"},
        "book": "booked"}
    assert terminal["duration_ms"] >= max(e["duration_ms"] for e in completed.values())
    assert result.duration_ms == terminal["duration_ms"]


def test_failure_events_carry_the_contract_fields(engine: Engine, recorder: Recorder) -> None:
    attempts = Counter[str]()

    def flaky(ctx: NodeContext) -> str:
        attempts["flaky"] += 1
        if ctx.attempt == 1:
            raise ConnectionError("exchange unreachable")
        return "ok"

    def broken(ctx: NodeContext) -> None:
        raise KeyError("price")

    wf = Workflow("failing", nodes=[
        Node("flaky", flaky, category="provider", backoff_min_s=0.001, backoff_max_s=0.002),
        Node("broken", broken, depends_on=["flaky"]),
        Node("never", lambda ctx: None, depends_on=["broken"]),
    ])
    result = engine.submit(wf, bot_id="b", strategy_id="s").result(timeout=5)
    assert result.status == "failed" and result.error_type == "KeyError"
    evs = recorder.for_execution(result.execution_id)
    check_stream(recorder.events)
    kinds = [(e["type"], e.get("node_id")) for e in evs if e["type"] != "progress"]
    assert kinds == [
        ("execution_started", None),
        ("node_started", "flaky"), ("node_failed", "flaky"), ("node_retrying", "flaky"),
        ("node_started", "flaky"), ("node_completed", "flaky"),
        ("node_started", "broken"), ("node_failed", "broken"),
        ("node_skipped", "never"),
        ("execution_failed", None),
    ]
    first_fail = next(e for e in evs if e["type"] == "node_failed")
    retrying = next(e for e in evs if e["type"] == "node_retrying")
    assert (first_fail["attempt"], first_fail["final"], first_fail["error_type"]) == (
        1, False, "ConnectionError")
    assert "exchange unreachable" in first_fail["error"]
    assert (retrying["attempt"], retrying["error_type"]) == (2, "ConnectionError")
    assert 0 <= retrying["delay_ms"] <= 2.0 + 1e-6
    again = [e for e in evs if e["type"] == "node_started" and e["node_id"] == "flaky"]
    assert [e["attempt"] for e in again] == [1, 2]
    done = next(e for e in evs if e["type"] == "node_completed")
    assert done["attempt"] == 2
    final = next(e for e in evs if e["type"] == "node_failed" and e["node_id"] == "broken")
    assert (final["final"], final["error_type"], final["attempt"]) == (True, "KeyError", 1)
    skipped = next(e for e in evs if e["type"] == "node_skipped")
    assert skipped["reason"] == "upstream_failed"
    terminal = evs[-1]
    assert terminal["status"] == "failed" and terminal["error_type"] == "KeyError"
    assert "price" in terminal["error"]
    assert attempts["flaky"] == 2


def test_seq_is_gapless_across_workflows_and_wseq_counts_per_workflow(
        engine: Engine, recorder: Recorder) -> None:
    workflows = [
        Workflow(f"wf{k}", nodes=[
            Node("a", lambda ctx: 1, category="provider"),
            Node("b", lambda ctx: 2, depends_on=["a"]),
            Node("c", lambda ctx: 3, depends_on=["a"]),
        ]) for k in range(3)]
    broken = Workflow("wf_broken", nodes=[Node("x", lambda ctx: 1 / 0)])
    handles = [engine.submit(workflows[i % 3] if i % 5 else broken) for i in range(60)]
    for h in handles:
        h.result(timeout=10)
    evs = recorder.events
    check_stream(evs)
    assert {e["workflow_id"] for e in evs} == {"wf0", "wf1", "wf2", "wf_broken"}
    assert len({e["execution_id"] for e in evs}) == 60
    terminals = Counter(e["execution_id"] for e in evs if e["type"] in TERMINAL)
    assert set(terminals.values()) == {1} and len(terminals) == 60
    assert engine.status()["last_seq"] == evs[-1]["seq"] == len(evs)


def test_execution_ids_are_unique_and_well_formed(engine: Engine) -> None:
    wf = Workflow("ids", nodes=[Node("x", lambda ctx: None)])
    handles = [engine.submit(wf) for _ in range(300)]
    ids = [h.execution_id for h in handles]
    for h in handles:
        assert h.result(timeout=10).execution_id == h.execution_id
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"exec_ids_[0-9a-f]{8}", i) for i in ids)


# -- subscribers ---------------------------------------------------------------------------

def test_subscribers_filter_by_type_and_workflow(engine: Engine, recorder: Recorder) -> None:
    completed_only = Recorder()
    alpha_only = Recorder()
    alpha_terminals = Recorder()
    engine.subscribe(completed_only, types={"node_completed"})
    engine.subscribe(alpha_only, workflow_id="alpha")
    engine.subscribe(alpha_terminals, types=["execution_completed", "execution_failed"],
                     workflow_id="alpha")
    alpha = Workflow("alpha", nodes=[Node("a1", lambda ctx: 1), Node("a2", lambda ctx: 2)])
    beta = Workflow("beta", nodes=[Node("b1", lambda ctx: 1)])
    handles = [engine.submit(alpha if i % 2 else beta) for i in range(10)]
    for h in handles:
        h.result(timeout=5)  # returns after every subscriber got the terminal event

    every = recorder.events

    def expected(pred: Callable[[Event], bool]) -> list[int]:
        return [e["seq"] for e in every if pred(e)]

    assert [e["seq"] for e in completed_only.events] == expected(
        lambda e: e["type"] == "node_completed")
    assert [e["seq"] for e in alpha_only.events] == expected(
        lambda e: e.get("workflow_id") == "alpha")
    assert [e["seq"] for e in alpha_terminals.events] == expected(
        lambda e: e.get("workflow_id") == "alpha" and e["type"] == "execution_completed")
    assert len(alpha_terminals.events) == 5
    assert len(completed_only.events) == 5 * 2 + 5


def test_a_closed_subscription_gets_nothing_more(engine: Engine, recorder: Recorder) -> None:
    late = Recorder()
    sub = engine.subscribe(late)
    wf = Workflow("unsub", nodes=[Node("x", lambda ctx: 1)])
    engine.submit(wf).result(timeout=5)
    seen = len(late.events)
    assert seen > 0
    sub.close()
    engine.submit(wf).result(timeout=5)
    assert len(late.events) == seen
    assert len(recorder.events) == 2 * seen


def test_result_returns_only_after_subscribers_got_the_terminal_event(engine: Engine) -> None:
    got: list[str] = []

    def slow_subscriber(event: Event) -> None:
        if event["type"] in TERMINAL:
            time.sleep(0.2)  # a slow consumer of the terminal event
        got.append(event["type"])

    engine.subscribe(slow_subscriber)
    wf = Workflow("after_subscribers", nodes=[Node("x", lambda ctx: 1)])
    for _ in range(3):
        result = engine.submit(wf).result(timeout=5)
        assert result.status == "completed"
        assert got[-1] == "execution_completed", got


def test_a_failing_subscriber_does_not_break_the_engine(engine: Engine,
                                                        recorder: Recorder) -> None:
    def broken(event: Event) -> None:
        raise RuntimeError("subscriber bug")

    engine.subscribe(broken)
    wf = Workflow("robust", nodes=[Node("x", lambda ctx: 1), Node("y", lambda ctx: 2)])
    results = [engine.submit(wf).result(timeout=5) for _ in range(3)]
    assert [r.status for r in results] == ["completed"] * 3
    check_stream(recorder.events)


# -- the node context ----------------------------------------------------------------------

def test_node_context_fields(engine: Engine) -> None:
    notes = Notes()

    def fetch(ctx: NodeContext) -> dict[str, int]:
        notes.note(ctx)
        return {"p": 1}

    def check(ctx: NodeContext) -> bool:
        notes.note(ctx)
        return True

    def act(ctx: NodeContext) -> str:
        notes.note(ctx)
        ctx.log.info("acting")
        return ctx.idempotency_key

    wf = Workflow("ctx_fields", nodes=[
        Node("fetch", fetch, category="provider"),
        Node("side", echo(notes, "side")),
        Node("check", check, category="condition", depends_on=["fetch"]),
        Node("act", act, category="action", depends_on=["check"]),
    ])
    inputs = {"threshold": 2.5, "symbol": "BTC"}
    handle = engine.submit(wf, inputs=inputs)
    result = handle.result(timeout=5)
    assert result.status == "completed"
    eid = handle.execution_id
    for node_id in ("fetch", "side", "check", "act"):
        ctx = notes.ctx(node_id)
        assert ctx.inputs == inputs
        assert ctx.execution_id == eid
        assert ctx.workflow_id == "ctx_fields"
        assert ctx.attempt == 1
        assert ctx.idempotency_key == f"{eid}:{node_id}"
        assert isinstance(ctx.cancelled, threading.Event)
        assert not ctx.cancelled.is_set()
    assert dict(notes.ctx("fetch").upstream) == {}
    assert dict(notes.ctx("check").upstream) == {"fetch": {"p": 1}}
    act_upstream = notes.ctx("act").upstream
    assert act_upstream["check"] is True
    assert "side" not in act_upstream  # no path from side to act
    assert set(act_upstream) <= {"check", "fetch"}
    assert result.results["act"] == f"{eid}:act"


def test_node_context_attempt_counts_and_idempotency_key_stays(engine: Engine) -> None:
    notes = Notes()

    def flaky(ctx: NodeContext) -> int:
        notes.note(ctx)
        if ctx.attempt < 3:
            raise TimeoutError("slow exchange")
        return ctx.attempt

    wf = Workflow("ctx_attempts", nodes=[
        Node("flaky", flaky, category="action", idempotent=True, max_restarts=2,
             backoff_min_s=0.001, backoff_max_s=0.002)])
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed" and result.results["flaky"] == 3
    contexts = notes.calls["flaky"]
    assert [c.attempt for c in contexts] == [1, 2, 3]
    assert {c.idempotency_key for c in contexts} == {f"{result.execution_id}:flaky"}


def test_node_context_log_is_bound_with_the_execution(engine: Engine) -> None:
    wf = Workflow("ctx_log", nodes=[Node("talk", lambda ctx: ctx.log.error("hello", n=1))])
    with structlog.testing.capture_logs() as logs:
        result = engine.submit(wf).result(timeout=5)
    assert result.status == "completed"
    mine = [entry for entry in logs if entry.get("event") == "hello"]
    assert len(mine) == 1
    assert mine[0]["execution_id"] == result.execution_id
    assert mine[0]["n"] == 1


# -- the engine API ------------------------------------------------------------------------

def _socket_fds() -> set[str]:
    sockets = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets.add(target)
    return sockets


def test_engine_start_opens_no_sockets() -> None:
    before = _socket_fds()
    engine = Engine.start()
    try:
        wf = Workflow("no_sockets", nodes=[Node("x", lambda ctx: 1)])
        assert engine.submit(wf).result(timeout=5).status == "completed"
        assert _socket_fds() - before == set()
    finally:
        engine.stop()


def test_config_without_transport_opens_no_sockets(make_engine: EngineFactory) -> None:
    before = _socket_fds()
    engine = make_engine({"daemon": {"max_concurrent_executions": 10},
                          "resilience": {"timeout_s": 5.0}})
    wf = Workflow("no_sockets_cfg", nodes=[Node("x", lambda ctx: 1)])
    assert engine.submit(wf).result(timeout=5).status == "completed"
    assert engine.config.transport is None
    assert _socket_fds() - before == set()


def test_actor_messages_submit_status_and_cancel(engine: Engine, recorder: Recorder) -> None:
    wf = Workflow("by_message", nodes=[Node("x", lambda ctx: ctx.inputs["v"] * 2)])
    handle = engine.ref.ask(Submit(wf, inputs={"v": 21}, bot_id="bot_9", strategy_id="s9"),
                            timeout=5)
    assert isinstance(handle, ExecutionHandle)
    assert handle.execution_id.startswith("exec_by_message_")
    result = handle.result(timeout=5)
    assert result.status == "completed" and result.results == {"x": 42}
    evs = recorder.for_execution(handle.execution_id)
    assert {(e["bot_id"], e["strategy_id"]) for e in evs} == {("bot_9", "s9")}

    # Submit by registered id, through the actor too.
    by_id = engine.ref.ask(Submit("by_message", inputs={"v": 1}), block=True, timeout=5)
    assert by_id.result(timeout=5).results == {"x": 2}

    status = engine.ref.ask(GetStatus(), block=True, timeout=5)
    assert status["workflows"] == ["by_message"]
    assert status["last_seq"] == recorder.events[-1]["seq"]

    gate = threading.Event()
    holding = Workflow("held", nodes=[Node("h", blocker(gate))])
    try:
        held = engine.ref.ask(Submit(holding), block=True, timeout=5)
        started_nodes(recorder, held.execution_id)
        assert engine.ref.ask(GetStatus(), block=True, timeout=5)["running"] == 1
        assert engine.ref.ask(Cancel(held.execution_id), timeout=5) == {"status": "cancelled"}
        assert held.result(timeout=5).status == "cancelled"
    finally:
        gate.set()


def test_status_fields(make_engine: EngineFactory) -> None:
    engine = make_engine({"emergency": {"limits": [
        {"name": "daily_loss", "kind": "daily_loss", "threshold": 1000.0}]}})
    rec = Recorder()
    rec.follow(engine)
    status = engine.status()
    for key in ("state", "running", "queued", "workflows", "breakers", "limits", "last_seq",
                "uptime_s"):
        assert key in status, key
    assert status["state"] == "NORMAL"
    assert (status["running"], status["queued"], status["last_seq"]) == (0, 0, 0)
    assert status["workflows"] == []
    assert isinstance(status["breakers"], dict)
    limit = status["limits"]["daily_loss"]
    assert limit["threshold"] == 1000.0 and limit["value"] == 0
    assert "utilization" in limit
    assert is_number(status["uptime_s"]) and status["uptime_s"] >= 0

    gate = threading.Event()
    wf = Workflow("status_wf", nodes=[Node("h", blocker(gate), breaker="exchange_a")])
    try:
        handle = engine.submit(wf)
        started_nodes(rec, handle.execution_id)
        status = engine.status()
        assert (status["running"], status["queued"]) == (1, 0)
        assert status["workflows"] == ["status_wf"]
        assert status["last_seq"] == rec.events[-1]["seq"]
    finally:
        gate.set()
    handle.result(timeout=5)
    engine.risk_update("daily_loss", value=250.0)
    status = engine.status()
    assert status["running"] == 0
    assert status["limits"]["daily_loss"]["value"] == 250.0
    assert status["limits"]["daily_loss"]["utilization"] == pytest.approx(0.25)
    # The node's run created its breaker, and a success leaves it closed.
    assert status["breakers"] == {"exchange_a": "closed"}
    assert status["last_seq"] == rec.events[-1]["seq"]
    assert status["uptime_s"] >= 0


def test_register_and_submit_by_id(engine: Engine, recorder: Recorder) -> None:
    wf = Workflow("registered", nodes=[Node("x", lambda ctx: 1)])
    engine.register(wf, bot_id="bot_r", strategy_id="strat_r")
    assert "registered" in engine.workflows
    handle = engine.submit("registered")
    assert handle.result(timeout=5).status == "completed"
    evs = recorder.for_execution(handle.execution_id)
    assert {(e["bot_id"], e["strategy_id"]) for e in evs} == {("bot_r", "strat_r")}
    # Given at submit, the ids win over the registered defaults.
    other = engine.submit("registered", bot_id="bot_x")
    other.result(timeout=5)
    assert {e["bot_id"] for e in recorder.for_execution(other.execution_id)} == {"bot_x"}
    with pytest.raises(UnknownWorkflow, match=r"'not_registered' \(registered: registered\)"):
        engine.submit("not_registered")  # a typo: the message names what there is


def test_stop_does_not_block_on_a_stuck_node(make_engine: EngineFactory) -> None:
    engine = make_engine()
    rec = Recorder()
    rec.follow(engine)
    never = threading.Event()
    entered = threading.Event()

    def stuck(ctx: NodeContext) -> None:
        entered.set()
        never.wait(30)  # deaf to ctx.cancelled: a node that is simply stuck

    wf = Workflow("stuck", nodes=[Node("stuck", stuck, category="provider"),
                                  Node("after", lambda ctx: 1, depends_on=["stuck"])])
    try:
        handle = engine.submit(wf)
        assert entered.wait(5)
        t0 = time.monotonic()
        engine.stop()
        elapsed = time.monotonic() - t0
        assert elapsed < 3.0, f"stop() took {elapsed:.1f} s"
        result = handle.result(timeout=1)
        assert result.status == "cancelled"
        types = rec.types(handle.execution_id)
        assert types[-1] == "execution_cancelled"
        with pytest.raises(EngineStopped):
            engine.submit(wf)
    finally:
        never.set()


def test_stop_ends_running_and_queued_executions_as_cancelled(
        make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    rec = Recorder()
    rec.follow(engine)
    gate = threading.Event()
    wf = Workflow("stopping", nodes=[Node("hold", blocker(gate))])
    try:
        running = engine.submit(wf)
        started_nodes(rec, running.execution_id)
        queued = [engine.submit(wf) for _ in range(3)]
        assert engine.status()["queued"] == 3
        engine.stop()
    finally:
        gate.set()
    for handle in (running, *queued):
        assert handle.result(timeout=1).status == "cancelled"
        assert rec.types(handle.execution_id)[-1] == "execution_cancelled"
    for handle in queued:  # ended while queued: execution_started right before the end
        assert rec.types(handle.execution_id) == ["execution_started", "execution_cancelled"]
    check_stream(rec.events)


def test_a_stuck_node_does_not_block_other_executions(engine: Engine,
                                                      recorder: Recorder) -> None:
    never = threading.Event()
    stuck = Workflow("stuck_one", nodes=[Node("stuck", blocker(never, 30))])
    fine = Workflow("fine_ones", nodes=[Node("a", lambda ctx: 1), Node("b", lambda ctx: 2)])
    try:
        held = engine.submit(stuck)
        started_nodes(recorder, held.execution_id)
        results = [engine.submit(fine).result(timeout=5) for _ in range(20)]
        assert [r.status for r in results] == ["completed"] * 20
        assert not held.done()
    finally:
        never.set()
    assert held.result(timeout=5).status == "completed"
    check_stream(recorder.events)


def test_engine_as_context_manager_stops() -> None:
    wf = Workflow("ctxmgr", nodes=[Node("x", lambda ctx: 1)])
    with Engine.start(Config()) as engine:
        assert engine.submit(wf).result(timeout=5).status == "completed"
    with pytest.raises(EngineStopped):
        engine.submit(wf)
