"""The kill switch: HALT with 1,000 executions in flight, refusal, resume, ALERT, REDUCE_ONLY,
state messages through `engine.ref.ask`, and the halt-to-acknowledged latency.

Real engines, real pykka actors and threads. Node functions block on events (a release gate
or their own `ctx.cancelled`), always with a timeout, so that executions are genuinely in
flight when the kill switch is thrown; every wait in the tests is on a condition.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from actors import (
    DaemonConfig,
    EmergencyState,
    Engine,
    ExecutionHandle,
    ExecutionResult,
    Node,
    NodeContext,
    ResumeRefused,
    Workflow,
)
from actors.messages import Alert, Halt, ReduceOnly, Resume
from actors.supervisor import SupervisorActor
from tests.conftest import EngineFactory, Recorder

#: How long a node function blocks at most (a halt is expected to end the wait far sooner).
BLOCK_S = 10.0
#: How long a test waits for a condition before failing.
WAIT_S = 20.0
#: How long 1,000 blocked providers may take to all be inside their functions.
FILL_S = 10.0
TERMINAL_TYPES = {"execution_completed", "execution_failed", "execution_halted",
                  "execution_cancelled"}


# -- helpers ----------------------------------------------------------------------------------

class Probe:
    """What node functions report from their threads; tests wait on it by condition."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.records: dict[str, list[Any]] = defaultdict(list)

    def record(self, key: str, item: Any = None) -> None:
        with self._cond:
            self.records[key].append(item)
            self._cond.notify_all()

    def count(self, key: str) -> int:
        with self._cond:
            return len(self.records[key])

    def items(self, key: str) -> list[Any]:
        with self._cond:
            return list(self.records[key])

    def wait_until(self, predicate: Callable[[], bool], what: str,
                   timeout: float = WAIT_S) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout):
                raise AssertionError(f"not within {timeout}s: {what}; records: "
                                     f"{ {k: len(v) for k, v in self.records.items()} }")

    def wait_count(self, key: str, n: int, timeout: float = WAIT_S) -> None:
        self.wait_until(lambda: len(self.records[key]) >= n, f"{n} {key!r} records", timeout)

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()


def daemon_config(max_concurrent: int, node_actors: int | None = None,
                  **extra: Any) -> dict[str, Any]:
    """A [daemon] table; asks for enough node actors to run `node_actors` nodes at once when
    the engine has that knob (nodes blocked on an event must each hold a thread)."""
    daemon: dict[str, Any] = {"max_concurrent_executions": max_concurrent, **extra}
    fields = {f.name for f in dataclasses.fields(DaemonConfig)}
    if node_actors is not None and "node_actors" in fields:
        daemon["node_actors"] = node_actors
    return {"daemon": daemon}


def results_of(handles: Iterable[ExecutionHandle],
               timeout: float = WAIT_S) -> list[ExecutionResult]:
    deadline = time.monotonic() + timeout
    out: list[ExecutionResult] = []
    missing: list[str] = []
    for handle in handles:
        try:
            out.append(handle.result(timeout=max(0.0, deadline - time.monotonic())))
        except TimeoutError:
            missing.append(handle.execution_id)
    assert not missing, f"{len(missing)} executions never ended (lost), e.g. {missing[:3]}"
    return out


def by_execution(events: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        if "execution_id" in event:
            grouped[event["execution_id"]].append(event)
    return grouped


def state_changes(rec: Recorder) -> list[dict[str, Any]]:
    return rec.of_type("emergency_state_changed")


def quick_workflow(wf_id: str = "quick") -> Workflow:
    return Workflow(wf_id, nodes=[
        Node("p", lambda ctx: {"price": 1.0}, category="provider"),
        Node("a", lambda ctx: {"order": ctx.idempotency_key}, category="action",
             depends_on=["p"]),
    ])


def blocking_workflow(probe: Probe, wf_id: str = "blocked") -> Workflow:
    """provider (blocks until cancelled) -> transform -> action."""

    def provider(ctx: NodeContext) -> dict[str, Any]:
        probe.record("p_in", ctx.execution_id)
        probe.record("p_cancelled", (ctx.execution_id, ctx.cancelled.wait(BLOCK_S)))
        return {"price": 1.0}

    def later(ctx: NodeContext) -> int:
        probe.record("later", ctx.execution_id)
        return 1

    def action(ctx: NodeContext) -> dict[str, str]:
        probe.record("action", ctx.execution_id)
        return {"order": ctx.idempotency_key}

    return Workflow(wf_id, nodes=[
        Node("p", provider, category="provider"),
        Node("t", later, depends_on=["p"]),
        Node("a", action, category="action", depends_on=["t"]),
    ])


def check_halted_execution(events: list[dict[str, Any]], node_ids: Iterable[str]) -> None:
    """A halted execution: one terminal execution_halted, last; if it left the queue,
    every node that never started is node_skipped with reason "halted" and no node both
    started and skipped; one halted while still queued has only its execution_started
    right before the execution_halted (CONTRACT 5)."""
    eid = events[0]["execution_id"]
    types = [e["type"] for e in events]
    assert types[0] == "execution_started", (eid, types)
    if types == ["execution_started", "execution_halted"]:
        assert events[-1]["status"] == "halted" and events[-1]["error_type"] == "Halted"
        return
    terminals = [e for e in events if e["type"] in TERMINAL_TYPES]
    assert len(terminals) == 1, (eid, types)
    terminal = terminals[0]
    assert terminal is events[-1], f"{eid}: events after the terminal one: {types}"
    assert terminal["type"] == "execution_halted", (eid, terminal)
    assert terminal["status"] == "halted"
    assert terminal["error_type"] == "Halted"
    started = {e["node_id"] for e in events if e["type"] == "node_started"}
    skipped = {e["node_id"]: e["reason"] for e in events if e["type"] == "node_skipped"}
    for node_id in node_ids:
        if node_id in started:
            assert node_id not in skipped, f"{eid}: {node_id} both started and skipped"
        else:
            assert skipped.get(node_id) == "halted", (
                f"{eid}: {node_id} never started but was not node_skipped/halted: {types}")


# -- HALT with 1,000 executions in flight -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("supervisors", [1, 2], ids=["1-supervisor", "2-supervisors"])
def test_halt_with_1000_executions_in_flight(make_engine: EngineFactory,
                                             supervisors: int) -> None:
    """1,000 provider -> action executions in flight, in three groups:

    g0 (250): provider blocks on its own ctx.cancelled   -> must be cancelled by the halt
    g1 (250): provider released early, action blocks on ctx.cancelled -> running action
    g2 (500): provider blocks on a gate opened just before the halt, then for a staggered
              0-100 ms (or until cancelled), then a quick action: their actions are being
              dispatched and admitted, one after another, while the halt is thrown.
    """
    n = 1000
    probe = Probe()
    release_g1 = threading.Event()
    release_g2 = threading.Event()

    def provider(ctx: NodeContext) -> dict[str, int]:
        g = ctx.inputs["g"]
        probe.record("p_in", ctx.execution_id)
        if g == 0:
            probe.record("p_cancelled", ctx.cancelled.wait(BLOCK_S))
        elif g == 1:
            release_g1.wait(BLOCK_S)
        else:
            release_g2.wait(BLOCK_S)
            ctx.cancelled.wait(0.0002 * ctx.inputs["k"])  # I/O of staggered length
        probe.record("p_out", ctx.execution_id)
        return {"g": g}

    def action(ctx: NodeContext) -> dict[str, str]:
        probe.record("a_in", (ctx.execution_id, time.monotonic(), ctx.inputs["g"]))
        if ctx.inputs["g"] == 1:
            probe.record("a_cancelled", ctx.cancelled.wait(BLOCK_S))
        probe.record("a_out", ctx.execution_id)
        return {"order": ctx.idempotency_key}

    wf = Workflow("halt1k", nodes=[
        Node("p", provider, category="provider"),
        Node("a", action, category="action", depends_on=["p"]),
    ])
    engine = make_engine(daemon_config(n, node_actors=n, supervisors=supervisors))
    rec = Recorder()
    rec.follow(engine)
    groups = [0] * 250 + [1] * 250 + [2] * 500
    try:
        handles = [engine.submit(wf, {"g": g, "k": k % 500}) for k, g in enumerate(groups)]
        group_of = {h.execution_id: g for h, g in zip(handles, groups, strict=True)}
        probe.wait_count("p_in", n, timeout=FILL_S)  # all 1,000 genuinely in flight
        release_g1.set()
        probe.wait_until(lambda: sum(1 for _, _, g in probe.records["a_in"] if g == 1) == 250,
                         "the 250 g1 actions should be running")
        release_g2.set()  # g2 providers return and their actions race the halt ...
        probe.wait_until(lambda: sum(1 for _, _, g in probe.records["a_in"] if g == 2) >= 25,
                         "some g2 actions should have started")  # ... already under way
        t_call = time.monotonic()
        reply = engine.halt("kill switch test")
        t_returned = time.monotonic()
    finally:
        release_g1.set()
        release_g2.set()
    print(f"\nhalt with {n} in flight ({supervisors} supervisor(s)): "
          f"{(t_returned - t_call) * 1000:.1f} ms to all acknowledged")
    assert reply == {"state": "HALT", "previous_state": "NORMAL"}
    assert engine.state is EmergencyState.HALT

    # Nothing lost, nothing failed.
    results = results_of(handles)
    statuses = Counter(r.status for r in results)
    assert set(statuses) <= {"halted", "completed"}, statuses
    for r in results:
        if group_of[r.execution_id] in (0, 1):
            assert r.status == "halted", (r.execution_id, group_of[r.execution_id], r)
        if r.status == "halted":
            assert r.error_type == "Halted", r
    events = rec.wait_for(
        lambda evs: sum(e["type"] in TERMINAL_TYPES for e in evs) >= n)
    action_starts = [e for e in events
                     if e["type"] == "node_started" and e["node_category"] == "action"]
    # Every function has come back, and every action published as started has been entered
    # (however late) and has returned, so a late entry cannot go unseen.
    probe.wait_count("p_out", n)
    probe.wait_until(lambda: len(probe.records["a_in"]) >= len(action_starts)
                     and len(probe.records["a_out"]) == len(probe.records["a_in"]),
                     f"{len(action_starts)} actions published as started should have run")
    halts = [e for e in events if e["type"] == "emergency_state_changed"]
    assert len(halts) == 1, halts
    halt_event = halts[0]
    assert {k: halt_event[k] for k in ("state", "previous_state", "reason", "source")} == {
        "state": "HALT", "previous_state": "NORMAL", "reason": "kill switch test",
        "source": "manual"}
    halt_seq = halt_event["seq"]

    # Zero action nodes started after the HALT, by stream position ...
    late = [e for e in action_starts if e["seq"] > halt_seq]
    assert not late, f"{len(late)} action node_started after HALT seq {halt_seq}: {late[:3]}"
    # ... and no node at all started after it.
    late_any = [e for e in events if e["type"] == "node_started" and e["seq"] > halt_seq]
    assert not late_any, late_any[:3]
    # ... and by time: no action function was entered after engine.halt() returned.
    action_calls = probe.items("a_in")
    assert len(action_calls) == len(action_starts), (
        "each action function call has exactly one node_started event")
    after = [(eid, t - t_returned) for eid, t, _ in action_calls if t > t_returned]
    assert not after, f"action functions entered after halt() returned: {after[:5]}"

    # Per execution: halted ones end execution_halted with unstarted nodes skipped/halted.
    grouped = by_execution(events)
    assert set(grouped) == set(group_of), "every execution published its events"
    for eid, evs in grouped.items():
        terminal = evs[-1]
        assert sum(e["type"] in TERMINAL_TYPES for e in evs) == 1, eid
        if terminal["type"] == "execution_halted":
            check_halted_execution(evs, ("p", "a"))
            assert all(e["state"] == "HALT" for e in evs if e["seq"] > halt_seq), eid
        else:
            assert terminal["type"] == "execution_completed", (eid, terminal)
    # g0 never reached its action: skipped with reason halted.
    for eid, g in group_of.items():
        if g == 0:
            skipped = [e for e in grouped[eid] if e["type"] == "node_skipped"]
            assert [(e["node_id"], e["reason"]) for e in skipped] == [("a", "halted")], eid

    # Running nodes were told: every blocked provider and every running action saw cancelled.
    assert probe.items("p_cancelled") == [True] * 250
    assert probe.items("a_cancelled") == [True] * 250

    g2 = Counter(r.status for r in results if group_of[r.execution_id] == 2)
    refused_actions = sum(
        1 for eid, g in group_of.items() if g == 2
        and any(e["type"] == "node_skipped" and e["node_id"] == "a" for e in grouped[eid])
        and any(e["type"] == "node_completed" and e["node_id"] == "p" for e in grouped[eid]))
    print(f"statuses {dict(statuses)}; racing group: {dict(g2)}, "
          f"{refused_actions} actions ready but stopped by the halt")

    # Submit while halted is refused; resume; stale runs of halted executions never start.
    refused = engine.submit(wf, {"g": 2, "k": 0}).result(timeout=5)
    assert refused.status == "refused"
    assert refused.error_type == "Halted"
    calls_before = len(probe.items("a_in"))
    assert engine.resume("all clear") == {"state": "NORMAL", "previous_state": "HALT"}
    after_resume = engine.submit(quick_workflow()).result(timeout=10)
    assert after_resume.status == "completed", after_resume
    assert len(probe.items("a_in")) == calls_before, "a halted execution's action ran later"


# -- HALT, small and exact --------------------------------------------------------------------

def test_halt_cancels_running_node_and_skips_the_rest(engine: Engine,
                                                      recorder: Recorder) -> None:
    probe = Probe()
    wf = blocking_workflow(probe)
    handle = engine.submit(wf)
    probe.wait_count("p_in", 1)
    engine.halt("stop")
    result = handle.result(timeout=WAIT_S)
    assert result.status == "halted"
    assert result.error_type == "Halted"
    probe.wait_count("p_cancelled", 1)
    assert probe.items("p_cancelled") == [(handle.execution_id, True)]
    evs = recorder.for_execution(handle.execution_id)
    check_halted_execution(evs, ("p", "t", "a"))
    assert [(e["node_id"], e["reason"]) for e in evs if e["type"] == "node_skipped"] == [
        ("t", "halted"), ("a", "halted")]
    assert probe.count("later") == 0
    assert probe.count("action") == 0


def test_queued_executions_end_halted_without_starting(make_engine: EngineFactory) -> None:
    probe = Probe()
    engine = make_engine(daemon_config(1))
    rec = Recorder()
    rec.follow(engine)
    wf = blocking_workflow(probe)
    running = engine.submit(wf)
    probe.wait_count("p_in", 1)
    queued = [engine.submit(wf) for _ in range(3)]
    assert engine.status()["queued"] == 3
    engine.halt("stop everything")
    for result in results_of([running, *queued]):
        assert result.status == "halted", result
        assert result.error_type == "Halted"
    for handle in queued:
        evs = rec.for_execution(handle.execution_id)
        # Ended while queued: its execution_started right before its terminal event.
        assert [e["type"] for e in evs] == ["execution_started", "execution_halted"], evs
        check_halted_execution(evs, ("p", "t", "a"))
        nodes = evs[-1]["nodes"]
        assert {n: v["status"] for n, v in nodes.items()} == dict.fromkeys("pta", "skipped")
    assert probe.count("p_in") == 1
    assert engine.status()["running"] == 0
    assert engine.status()["queued"] == 0


def busy_supervisors(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event,
                                                               threading.Event]:
    """(busy, free): once `busy` is set, a supervisor taking an execution to start waits
    for `free` first, as one busy with a backlog does."""
    busy, free = threading.Event(), threading.Event()
    start = SupervisorActor._start

    def busy_start(self: SupervisorActor, exe: Any) -> None:
        if busy.is_set():
            free.wait(WAIT_S)
        start(self, exe)

    monkeypatch.setattr(SupervisorActor, "_start", busy_start)
    return busy, free


def test_queued_executions_end_halted_even_if_a_resume_beats_their_supervisor(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """The halt hands the queued executions to the supervisors and returns; a resume that
    lands before a (busy) supervisor takes them must not let them run."""
    busy, free = busy_supervisors(monkeypatch)
    probe = Probe()
    engine = make_engine(daemon_config(1))
    wf = blocking_workflow(probe)
    running = engine.submit(wf)
    probe.wait_count("p_in", 1)
    queued = [engine.submit(wf) for _ in range(3)]
    busy.set()
    engine.halt("stop everything")
    engine.resume("back")  # while the supervisor has not taken the queued ones yet
    free.set()
    for result in results_of([running, *queued]):
        assert result.status == "halted", result
    assert probe.count("p_in") == 1


def test_a_submit_that_saw_no_halt_yet_is_refused_if_admitted_after_its_drain(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its HALT check passed before the halt; it reached admission after the halt took the
    queue, and returned while halted: it is refused, never run after the resume."""
    busy, free = busy_supervisors(monkeypatch)
    engine = make_engine(daemon_config(1))
    inside, go = threading.Event(), threading.Event()
    admit = engine.admission.admit

    def late_admit(exe: Any, **options: Any) -> str:
        inside.set()
        go.wait(WAIT_S)
        return admit(exe, **options)

    monkeypatch.setattr(engine.admission, "admit", late_admit)
    handles: list[ExecutionHandle] = []
    submitter = threading.Thread(target=lambda: handles.append(
        engine.submit(Workflow("late", nodes=[Node("n", lambda ctx: 1)]))))
    submitter.start()
    assert inside.wait(WAIT_S)
    engine.halt("stop everything")
    busy.set()
    go.set()
    submitter.join(WAIT_S)
    engine.resume("back")
    free.set()
    result = handles[0].result(timeout=WAIT_S)
    assert result.status == "refused" and result.error_type == "Halted", result


def test_an_execution_admitted_before_a_halt_and_started_after_it_ends_halted(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Admitted to run (a free slot) before the halt, but its supervisor was told only after
    the halt and a resume: it counted as running at the halt, so it ends halted."""
    engine = make_engine(daemon_config(2))
    next_supervisor = engine._next_supervisor
    telling, go = threading.Event(), threading.Event()

    class LateTell:
        def __init__(self, ref: Any) -> None:
            self._ref = ref

        def tell(self, message: Any) -> None:
            telling.set()
            go.wait(WAIT_S)
            self._ref.tell(message)

    monkeypatch.setattr(engine, "_next_supervisor", lambda: LateTell(next_supervisor()))
    handles: list[ExecutionHandle] = []
    submitter = threading.Thread(target=lambda: handles.append(
        engine.submit(Workflow("late", nodes=[Node("n", lambda ctx: 1)]))))
    submitter.start()
    assert telling.wait(WAIT_S)  # admitted
    engine.halt("stop everything")
    engine.resume("back")
    go.set()
    submitter.join(WAIT_S)
    result = handles[0].result(timeout=WAIT_S)
    assert result.status == "halted", result


def test_submit_while_halted_is_refused_and_resume_runs_again(engine: Engine,
                                                              recorder: Recorder) -> None:
    wf = quick_workflow()
    engine.halt("maintenance")
    result = engine.submit(wf).result(timeout=5)
    assert result.status == "refused"
    assert result.error_type == "Halted"
    assert not recorder.for_execution(result.execution_id), "a refused submit starts nothing"
    assert engine.resume() == {"state": "NORMAL", "previous_state": "HALT"}
    assert engine.state is EmergencyState.NORMAL
    assert engine.status()["state"] == "NORMAL"
    again = engine.submit(wf).result(timeout=10)
    assert again.status == "completed"
    assert again.results["a"] == {"order": f"{again.execution_id}:a"}
    changes = [(e["state"], e["previous_state"], e["source"]) for e in state_changes(recorder)]
    assert changes == [("HALT", "NORMAL", "manual"), ("NORMAL", "HALT", "manual")]


def test_resume_refused_while_a_limit_is_exceeded_unless_forced(make_engine: EngineFactory
                                                                ) -> None:
    engine = make_engine({"emergency": {"limits": [
        {"name": "daily_loss", "kind": "daily_loss", "threshold": 1000.0}]}})
    rec = Recorder()
    rec.follow(engine)
    engine.risk_update("daily_loss", value=1500.0)
    assert engine.state is EmergencyState.HALT
    with pytest.raises(ResumeRefused, match="daily_loss"):
        engine.resume()
    with pytest.raises(ResumeRefused):
        engine.ref.ask(Resume(reason="try again"))
    assert engine.state is EmergencyState.HALT
    assert engine.ref.ask(Resume(reason="operator override", force=True)) == {
        "state": "NORMAL", "previous_state": "HALT"}
    assert engine.submit(quick_workflow()).result(timeout=10).status == "completed"
    # Lowering the figure below the threshold makes a plain resume possible again.
    engine.halt("again")
    with pytest.raises(ResumeRefused):
        engine.resume()
    engine.risk_update("daily_loss", value=100.0)
    assert engine.resume() == {"state": "NORMAL", "previous_state": "HALT"}
    sources = [(e["state"], e["source"]) for e in state_changes(rec)]
    assert sources == [("HALT", "risk_limit"), ("NORMAL", "manual"), ("HALT", "manual"),
                       ("NORMAL", "manual")]


# -- state messages ---------------------------------------------------------------------------

def test_state_messages_through_engine_ref(engine: Engine, recorder: Recorder) -> None:
    steps: list[tuple[Alert | Halt | ReduceOnly | Resume, str, str]] = [
        (Alert(reason="vol spike"), "ALERT", "NORMAL"),
        (Halt(reason="manual stop"), "HALT", "ALERT"),
        (ReduceOnly(reason="close positions"), "REDUCE_ONLY", "HALT"),
        (Halt(reason="stop again"), "HALT", "REDUCE_ONLY"),
        (Resume(reason="all clear"), "NORMAL", "HALT"),
        (ReduceOnly(reason="de-risk"), "REDUCE_ONLY", "NORMAL"),
        (Alert(reason="watch"), "ALERT", "REDUCE_ONLY"),
        (Resume(), "NORMAL", "ALERT"),
    ]
    for message, state, previous in steps:
        reply = engine.ref.ask(message, timeout=WAIT_S)
        assert reply == {"state": state, "previous_state": previous}, message
        assert engine.state is EmergencyState(state)
        assert engine.status()["state"] == state
    changes = state_changes(recorder)
    assert [(e["state"], e["previous_state"], e["reason"], e["source"]) for e in changes] == [
        (state, previous, message.reason, "manual") for message, state, previous in steps]
    for event in changes:
        assert event["v"] == 1
        assert isinstance(event["seq"], int)
        assert event["timestamp"].endswith("Z")
    seqs = [e["seq"] for e in changes]
    assert seqs == sorted(seqs)


def test_same_state_again_replies_but_publishes_no_change(engine: Engine,
                                                          recorder: Recorder) -> None:
    assert engine.ref.ask(Halt(reason="one")) == {"state": "HALT", "previous_state": "NORMAL"}
    assert engine.ref.ask(Halt(reason="two")) == {"state": "HALT", "previous_state": "HALT"}
    assert len(state_changes(recorder)) == 1


# -- ALERT, REDUCE_ONLY ------------------------------------------------------------------------

def test_alert_runs_everything_and_events_carry_the_state(engine: Engine,
                                                          recorder: Recorder) -> None:
    assert engine.alert("spread anomaly") == {"state": "ALERT", "previous_state": "NORMAL"}
    change = state_changes(recorder)[-1]
    assert (change["state"], change["reason"], change["source"]) == (
        "ALERT", "spread anomaly", "manual")
    result = engine.submit(quick_workflow()).result(timeout=10)
    assert result.status == "completed"
    assert set(result.results) == {"p", "a"}
    evs = recorder.for_execution(result.execution_id)
    assert evs[-1]["type"] == "execution_completed"
    assert [e["node_id"] for e in evs if e["type"] == "node_started"] == ["p", "a"]
    assert {e["state"] for e in evs} == {"ALERT"}
    engine.resume()
    later = engine.submit(quick_workflow()).result(timeout=10)
    assert {e["state"] for e in recorder.for_execution(later.execution_id)} == {"NORMAL"}


def reduce_only_workflow(probe: Probe) -> Workflow:
    def provider(ctx: NodeContext) -> dict[str, float]:
        probe.record("provider", ctx.execution_id)
        return {"position": 5.0}

    def close(ctx: NodeContext) -> str:
        probe.record("close", ctx.execution_id)
        return "closed"

    def open_more(ctx: NodeContext) -> str:
        probe.record("open", ctx.execution_id)
        return "opened"

    def after_open(ctx: NodeContext) -> str:
        probe.record("after_open", ctx.execution_id)
        return "x"

    return Workflow("reduce", nodes=[
        Node("position", provider, category="provider"),
        Node("close", close, category="action", depends_on=["position"], reduces_risk=True),
        Node("open", open_more, category="action", depends_on=["position"]),
        Node("after_open", after_open, depends_on=["open"]),
    ])


def test_reduce_only_runs_reducing_actions_and_skips_the_others(engine: Engine,
                                                                recorder: Recorder) -> None:
    probe = Probe()
    assert engine.reduce_only("de-risk") == {"state": "REDUCE_ONLY",
                                             "previous_state": "NORMAL"}
    result = engine.submit(reduce_only_workflow(probe)).result(timeout=10)
    assert result.status == "completed", result
    assert result.results["position"] == {"position": 5.0}
    assert result.results["close"] == "closed"
    assert "open" not in result.results
    assert probe.count("provider") == 1
    assert probe.count("close") == 1
    assert probe.count("open") == 0
    assert probe.count("after_open") == 0
    evs = recorder.for_execution(result.execution_id)
    assert sorted(e["node_id"] for e in evs if e["type"] == "node_started") == [
        "close", "position"]
    skipped = {e["node_id"]: e["reason"] for e in evs if e["type"] == "node_skipped"}
    assert skipped["open"] == "reduce_only"
    assert skipped["after_open"] == "reduce_only"
    assert {e["state"] for e in evs} == {"REDUCE_ONLY"}


def test_reduce_only_is_allowed_from_halt(engine: Engine, recorder: Recorder) -> None:
    probe = Probe()
    engine.halt("incident")
    assert engine.submit(quick_workflow()).result(timeout=5).status == "refused"
    assert engine.ref.ask(ReduceOnly(reason="close out")) == {
        "state": "REDUCE_ONLY", "previous_state": "HALT"}
    result = engine.submit(reduce_only_workflow(probe)).result(timeout=10)
    assert result.status == "completed"
    assert probe.count("close") == 1
    assert probe.count("open") == 0
    change = state_changes(recorder)[-1]
    assert (change["state"], change["previous_state"], change["reason"], change["source"]) == (
        "REDUCE_ONLY", "HALT", "close out", "manual")


# -- halt-to-all-acknowledged latency (measured and printed; bench/halt.py makes the claim) ----

def test_halt_to_acknowledged_latency_is_measured(make_engine: EngineFactory) -> None:
    rounds, in_flight = 15, 100
    probe = Probe()

    def provider(ctx: NodeContext) -> int:
        probe.record("in", ctx.execution_id)
        probe.record("cancelled", ctx.cancelled.wait(BLOCK_S))
        return 1

    wf = Workflow("latency", nodes=[
        Node("p", provider, category="provider"),
        Node("a", lambda ctx: 1, category="action", depends_on=["p"]),
    ])
    engine = make_engine(daemon_config(in_flight, node_actors=in_flight))
    samples: list[float] = []
    try:
        for r in range(rounds):
            handles = [engine.submit(wf, {"round": r}) for _ in range(in_flight)]
            probe.wait_count("in", (r + 1) * in_flight, timeout=FILL_S)
            t0 = time.perf_counter()
            if r % 2:
                reply = engine.ref.ask(Halt(reason=f"round {r}"), block=True, timeout=WAIT_S)
            else:
                reply = engine.halt(f"round {r}")
            samples.append(time.perf_counter() - t0)
            assert reply["state"] == "HALT"
            assert {res.status for res in results_of(handles)} == {"halted"}
            probe.wait_count("cancelled", (r + 1) * in_flight)
            engine.resume()
        assert probe.items("cancelled") == [True] * rounds * in_flight
    finally:
        if samples:
            ms = sorted(s * 1000 for s in samples)
            p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
            print(f"\nhalt-to-all-acknowledged, {in_flight} in flight, {len(ms)} rounds: "
                  f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")


def test_a_stuck_node_reads_cancelled_as_soon_as_halt_returns(
        make_engine: EngineFactory) -> None:
    """The cancel flag is set before halt() returns, even for a node not waiting on it
    (only waking waiters is deferred by a moment, so the acknowledgement comes first)."""
    engine = make_engine()
    outside = threading.Event()
    entered = threading.Semaphore(0)
    seen: list[bool] = []
    returned = threading.Semaphore(0)

    def stuck(ctx: NodeContext) -> None:
        entered.release()
        outside.wait(10)  # a hung call that does not look at ctx.cancelled
        seen.append(ctx.cancelled.is_set())
        returned.release()

    handles = [engine.submit(Workflow("stuck", nodes=[Node("io", stuck, category="provider")]))
               for _ in range(3)]
    for _ in handles:
        assert entered.acquire(timeout=5)
    engine.halt("test")
    outside.set()
    assert {h.result(timeout=5).status for h in handles} == {"halted"}
    for _ in handles:
        assert returned.acquire(timeout=5)
    assert seen == [True, True, True]
