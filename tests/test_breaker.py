"""Circuit breakers (README): shared per `breaker` key across executions, opened by
`breaker_failure_threshold` consecutive failed runs, skipping nodes at once while open, one
trial after `breaker_reset_timeout_s`, closed or re-opened by that trial's outcome.

Real engines and threads; a `ManualClock` stands in for the reset timeout, so a 30 s wait is
one `clock.advance(30)`. No sleeps: waits are on events, conditions and actor replies.
"""

from __future__ import annotations

import functools
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from actors import Engine, ManualClock, Node, NodeContext, Workflow
from actors.breaker import Admit, BreakerState, CircuitBreaker
from actors.events import EventSink
from actors.execution import ExecutionHandle, ExecutionResult
from tests.conftest import Recorder
from tests.test_resilience import busy

EngineFactory = Callable[..., Engine]
THRESHOLD = 3
RESET_S = 30.0


# -- helpers -------------------------------------------------------------------------------

class Venue:
    """A fake exchange: counts calls; answers, fails or blocks as the test says."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.mode = "ok"          # ok | fail | block
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def __call__(self, ctx: NodeContext) -> dict[str, float]:
        with self._lock:
            self.calls += 1
            self.threads.append(threading.current_thread())
        mode = self.mode
        if mode == "fail":
            raise ConnectionError("venue unreachable")
        if mode == "block":
            self.entered.set()
            self.release.wait(10)
        return {"price": 100.0}


def breaker_engine(make_engine: EngineFactory, clock: ManualClock, *,
                   supervisors: int = 2) -> tuple[Engine, Recorder]:
    engine = make_engine({
        "daemon": {"supervisors": supervisors},
        "resilience": {"breaker_failure_threshold": THRESHOLD,
                       "breaker_reset_timeout_s": RESET_S,
                       "backoff_min_s": 0.0, "backoff_max_s": 0.0},
    }, clock=clock)
    rec = Recorder()
    rec.follow(engine)
    return engine, rec


def around(rec: Recorder, kind: str, index: int = -1) -> tuple[dict[str, Any], dict[str, Any]]:
    """The events just before and just after the `index`th event of `kind` in the stream."""
    events = rec.events
    at = [i for i, e in enumerate(events) if e["type"] == kind][index]
    return events[at - 1], events[at + 1] if at + 1 < len(events) else {}


def quote_workflow(venue: Venue, *, workflow_id: str = "quotes", node_id: str = "quote",
                   breaker: str = "binance", max_restarts: int = 0,
                   timeout_s: float | None = None) -> Workflow:
    return Workflow(workflow_id, nodes=[
        Node(node_id, venue, category="provider", breaker=breaker, max_restarts=max_restarts,
             timeout_s=timeout_s),
        Node("after", lambda ctx: "done", depends_on=[node_id]),
    ])


def retrying_workflow(venue: Venue, *, backoff_s: float) -> Workflow:
    """`quote_workflow`'s shape, its quote retried (10 times, for as long as they take)
    after `backoff_s` each."""
    return Workflow("quotes", nodes=[
        Node("quote", venue, category="provider", breaker="binance", max_restarts=10,
             restart_within_s=1e6, backoff_min_s=backoff_s, backoff_max_s=backoff_s),
        Node("after", lambda ctx: "done", depends_on=["quote"]),
    ])


def announced(attempt: int, events: list[dict[str, Any]]) -> bool:
    """Whether a `node_retrying` for `attempt` is among `events`."""
    return any(e["type"] == "node_retrying" and e["attempt"] == attempt for e in events)


def run(engine: Engine, wf: Workflow) -> ExecutionResult:
    return engine.submit(wf).result(timeout=5)


def breaker_state(engine: Engine, key: str = "binance") -> str:
    state: str = engine.status()["breakers"][key]
    return state


def current_state(breaker: CircuitBreaker) -> BreakerState:
    """`breaker.state`, typed as declared: mypy keeps an earlier `assert breaker.state is X`
    narrowing past the calls that change it (python/mypy#9005)."""
    return breaker.state


def circuit_events(rec: Recorder, kind: str, key: str = "binance") -> list[dict[str, Any]]:
    return [e for e in rec.of_type(kind) if e["breaker"] == key]


def open_breaker(engine: Engine, venue: Venue, wf: Workflow) -> list[ExecutionResult]:
    venue.mode = "fail"
    results = [run(engine, wf) for _ in range(THRESHOLD)]
    assert all(r.error_type == "ConnectionError" for r in results)
    assert breaker_state(engine) == "open"
    return results


def half_open(make_engine: EngineFactory, clock: ManualClock
              ) -> tuple[Engine, Recorder, Venue, Workflow]:
    """A breaker_engine whose `binance` breaker was opened and is due its trial."""
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    wf = quote_workflow(venue)
    open_breaker(engine, venue, wf)
    clock.advance(RESET_S)
    return engine, rec, venue, wf


def assert_skipped_for_circuit(rec: Recorder, result: ExecutionResult,
                               node_id: str = "quote") -> None:
    assert result.status == "failed"
    assert result.error_type == "CircuitOpen"
    events = rec.for_execution(result.execution_id)
    assert not [e for e in events if e["type"] == "node_started"]
    skipped = [(e["node_id"], e["reason"]) for e in events if e["type"] == "node_skipped"]
    assert skipped == [(node_id, "circuit_open"), ("after", "upstream_failed")]
    terminal = [e for e in events if e["type"].startswith("execution_")]
    assert [e["type"] for e in terminal] == ["execution_started", "execution_failed"]
    assert terminal[-1]["error_type"] == "CircuitOpen"
    assert events[-1] is terminal[-1]


# -- opening -------------------------------------------------------------------------------

def test_opens_after_consecutive_failures_across_executions(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    wf = quote_workflow(venue)
    assert engine.status()["breakers"] == {}

    venue.mode = "fail"
    results = []
    for n in range(1, THRESHOLD + 1):
        if n > 1:
            assert breaker_state(engine) == "closed"
            assert rec.of_type("circuit_opened") == []
        result = run(engine, wf)
        assert result.error_type == "ConnectionError"  # the node itself ran and failed
        results.append(result)
    assert len({r.execution_id for r in results}) == THRESHOLD
    assert venue.calls == THRESHOLD

    opened = rec.of_type("circuit_opened")
    assert len(opened) == 1
    assert opened[0]["breaker"] == "binance"
    assert opened[0]["failures"] == THRESHOLD
    assert "execution_id" not in opened[0]  # a system event, not a workflow one
    assert engine.status()["breakers"] == {"binance": "open"}

    # Open: nodes with that key are skipped, in this workflow and any other.
    assert_skipped_for_circuit(rec, run(engine, wf))
    other = quote_workflow(venue, workflow_id="orderbook", node_id="book")
    assert_skipped_for_circuit(rec, run(engine, other), node_id="book")
    assert venue.calls == THRESHOLD
    # Another key is a different breaker: still closed, still runs.
    venue.mode = "ok"
    coinbase = quote_workflow(venue, workflow_id="cb", breaker="coinbase")
    assert run(engine, coinbase).status == "completed"
    assert venue.calls == THRESHOLD + 1
    assert engine.status()["breakers"] == {"binance": "open", "coinbase": "closed"}


def test_open_breaker_skips_at_once(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    wf = quote_workflow(venue)
    open_breaker(engine, venue, wf)
    samples = []
    for _ in range(30):
        t0 = time.perf_counter()
        result = engine.submit(wf).result(timeout=5)
        samples.append(time.perf_counter() - t0)
        assert result.error_type == "CircuitOpen"
    assert venue.calls == THRESHOLD
    median_ms = statistics.median(samples) * 1000.0
    assert median_ms < 5.0, f"submit -> CircuitOpen result took {median_ms:.2f} ms (median)"
    assert_skipped_for_circuit(rec, result)


def test_every_attempt_counts_towards_the_threshold(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    venue.mode = "fail"
    wf = quote_workflow(venue, max_restarts=10)
    result = run(engine, wf)
    # Three failed attempts of one execution open the breaker; the fourth is not run: the
    # third failure is not final, its retry is asked for at once and refused.
    assert venue.calls == THRESHOLD
    assert result.status == "failed" and result.error_type == "CircuitOpen"
    events = rec.for_execution(result.execution_id)
    assert [(e["attempt"], e["final"]) for e in events if e["type"] == "node_failed"] == [
        (1, False), (2, False), (3, False)]
    assert [e["attempt"] for e in events if e["type"] == "node_retrying"] == [2, 3, 4]
    assert [(e["node_id"], e["reason"]) for e in events if e["type"] == "node_skipped"] == [
        ("quote", "circuit_open"), ("after", "upstream_failed")]
    assert [e["type"] for e in events][-5:] == [
        "node_failed", "node_retrying", "node_skipped", "node_skipped", "execution_failed"]
    assert [e["failures"] for e in circuit_events(rec, "circuit_opened")] == [THRESHOLD]
    # After the failure that opened it, not before: a subscriber sees cause then effect.
    before, after = around(rec, "circuit_opened")
    assert (before["type"], before["attempt"], after["type"]) == ("node_failed", THRESHOLD,
                                                                  "node_retrying")
    assert breaker_state(engine) == "open"


def test_a_retry_due_while_the_breaker_is_open_is_skipped_without_waiting_its_backoff(
        make_engine: EngineFactory) -> None:
    """The failure that opens the breaker would be retried after 10 s, while the breaker
    is still open (30 s): the node is skipped at once. (The clock is not advanced past the
    trial: a retry timer would hold the execution for ever.)"""
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    venue.mode = "fail"
    wf = retrying_workflow(venue, backoff_s=RESET_S / 3)
    open_breaker(engine, venue, quote_workflow(venue))
    result = run(engine, wf)
    assert_skipped_for_circuit(rec, result)
    assert venue.calls == THRESHOLD  # never started: the breaker was open already
    venue.calls = 0
    clock.advance(RESET_S)  # the trial fails: open again, and this execution's retry with it
    result = run(engine, wf)
    assert (result.status, result.error_type, venue.calls) == ("failed", "CircuitOpen", 1)
    events = rec.for_execution(result.execution_id)
    assert [(e["type"], e.get("final"), e.get("delay_ms")) for e in events
            if e.get("node_id") == "quote"] == [
        ("node_started", None, None), ("node_failed", False, None),
        ("node_retrying", None, 0.0), ("node_skipped", None, None)]


def test_a_retry_due_after_the_reset_timeout_is_scheduled_and_runs_as_the_trial(
        make_engine: EngineFactory) -> None:
    """A backoff longer than what is left of the breaker's reset timeout: the retry is
    announced and, once due, is the half-open trial; its success closes the breaker."""
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    venue.mode = "fail"
    handle = engine.submit(retrying_workflow(venue, backoff_s=2 * RESET_S))
    for attempt in range(2, THRESHOLD + 2):  # each failure's retry, due in 60 s
        rec.wait_for(functools.partial(announced, attempt))
        if attempt == THRESHOLD + 1:  # the third failure opened it: its retry is the trial
            assert breaker_state(engine) == "open" and not handle.done()
            venue.mode = "ok"
        clock.advance(2 * RESET_S)
    result = handle.result(timeout=5)
    assert (result.status, venue.calls) == ("completed", THRESHOLD + 1)
    assert breaker_state(engine) == "closed"


def test_a_success_resets_the_consecutive_failure_count(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    wf = quote_workflow(venue)
    for mode in ["fail"] * (THRESHOLD - 1) + ["ok"] + ["fail"] * (THRESHOLD - 1):
        venue.mode = mode
        run(engine, wf)
    assert breaker_state(engine) == "closed"
    assert rec.of_type("circuit_opened") == []
    venue.mode = "fail"
    run(engine, wf)
    assert breaker_state(engine) == "open"
    assert [e["failures"] for e in circuit_events(rec, "circuit_opened")] == [THRESHOLD]


# -- half-open -----------------------------------------------------------------------------

def test_exactly_one_trial_among_500_racing_executions_and_success_closes(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock, supervisors=4)
    venue = Venue()
    wf = quote_workflow(venue)
    open_breaker(engine, venue, wf)

    clock.advance(RESET_S - 0.5)
    assert run(engine, wf).error_type == "CircuitOpen"  # not yet
    assert rec.of_type("circuit_half_open") == []
    clock.advance(0.5)

    venue.mode = "block"
    calls_before = venue.calls
    n_threads, per_thread = 5, 100
    total = n_threads * per_thread
    handles: list[ExecutionHandle] = []
    done = threading.Condition()
    finished: list[ExecutionHandle] = []
    start = threading.Barrier(n_threads)

    def on_done(handle: ExecutionHandle) -> None:
        with done:
            finished.append(handle)
            done.notify_all()

    def submitter() -> None:
        start.wait(timeout=10)
        mine = [engine.submit(wf) for _ in range(per_thread)]
        for handle in mine:
            handle.add_done_callback(on_done)
        with done:
            handles.extend(mine)

    threads = [threading.Thread(target=submitter) for _ in range(n_threads)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=20)
        assert len(handles) == total
        assert venue.entered.wait(10), "no trial run started"
        with done:
            assert done.wait_for(lambda: len(finished) >= total - 1, timeout=20), len(finished)
        # Everyone else was turned away; the trial is still in flight.
        assert venue.calls == calls_before + 1
        assert len(finished) == total - 1
        assert breaker_state(engine) == "half_open"
        half_open = circuit_events(rec, "circuit_half_open")
        assert len(half_open) == 1
        refused = [h.result(timeout=0) for h in finished]
        assert {(r.status, r.error_type) for r in refused} == {("failed", "CircuitOpen")}
    finally:
        venue.release.set()
    with done:
        assert done.wait_for(lambda: len(finished) == total, timeout=10)
    results = [h.result(timeout=0) for h in handles]
    completed = [r for r in results if r.status == "completed"]
    assert len(completed) == 1
    assert sum(r.error_type == "CircuitOpen" for r in results) == total - 1
    assert venue.calls == calls_before + 1
    assert len(circuit_events(rec, "circuit_half_open")) == 1
    closed = circuit_events(rec, "circuit_closed")
    assert len(closed) == 1
    assert closed[0]["seq"] > circuit_events(rec, "circuit_half_open")[0]["seq"]
    assert breaker_state(engine) == "closed"
    # Closed again: runs go through, and the failure count starts from zero.
    venue.mode = "ok"
    assert run(engine, wf).status == "completed"
    venue.mode = "fail"
    for _ in range(THRESHOLD - 1):
        run(engine, wf)
    assert breaker_state(engine) == "closed"


def test_failed_trial_reopens_for_another_reset_timeout(make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec, venue, wf = half_open(make_engine, clock)

    venue.mode = "fail"
    trial = run(engine, wf)
    assert trial.error_type == "ConnectionError"  # the trial ran, and failed
    assert venue.calls == THRESHOLD + 1
    kinds = [e["type"] for e in rec.events if e["type"].startswith("circuit_")]
    assert kinds == ["circuit_opened", "circuit_half_open", "circuit_opened"]
    assert circuit_events(rec, "circuit_opened")[-1]["failures"] == THRESHOLD + 1
    assert breaker_state(engine) == "open"

    # Re-opened for a whole reset timeout from the failed trial.
    assert_skipped_for_circuit(rec, run(engine, wf))
    clock.advance(RESET_S - 0.5)
    assert_skipped_for_circuit(rec, run(engine, wf))
    assert venue.calls == THRESHOLD + 1
    clock.advance(0.5)
    venue.mode = "ok"
    assert run(engine, wf).status == "completed"
    assert len(circuit_events(rec, "circuit_half_open")) == 2
    assert len(circuit_events(rec, "circuit_closed")) == 1
    before, _ = around(rec, "circuit_closed")  # after the trial's success that closed it
    assert (before["type"], before["node_id"]) == ("node_completed", "quote")
    assert breaker_state(engine) == "closed"


def test_trial_that_times_out_reopens_and_its_late_success_is_ignored(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    wf = quote_workflow(venue, timeout_s=5.0)
    open_breaker(engine, venue, wf)
    clock.advance(RESET_S)

    venue.mode = "block"
    try:
        handle = engine.submit(wf)
        assert venue.entered.wait(10)
        assert breaker_state(engine) == "half_open"
        clock.advance(5.0)
        result = handle.result(timeout=5)
        assert result.error_type == "NodeTimeout"
        assert breaker_state(engine) == "open"
        assert len(circuit_events(rec, "circuit_opened")) == 2
        before, _ = around(rec, "circuit_opened")  # after the timeout that re-opened it
        assert (before["type"], before["error_type"]) == ("node_failed", "NodeTimeout")
    finally:
        venue.release.set()
    stuck = venue.threads[-1]
    stuck.join(timeout=5)
    assert not stuck.is_alive()
    engine.supervisor_stats()  # its late NodeDone has been handled
    assert breaker_state(engine) == "open"
    assert circuit_events(rec, "circuit_closed") == []
    assert not [e for e in rec.for_execution(result.execution_id)
                if e["type"] == "node_completed" and e["node_id"] == "quote"]


# -- a trial admitted by the breaker but refused before it starts ---------------------------
# The breaker says TRIAL when the run is dispatched; the kill switch's gate may still refuse
# it on its way into a node actor (REDUCE_ONLY for an action that does not reduce risk, HALT,
# its execution closed meanwhile). A trial that never ran must be handed back, or the
# breaker stays half-open with a trial "in flight" forever and refuses every later run.

def test_breaker_unit_a_released_trial_lets_the_next_caller_be_the_trial() -> None:
    clock = ManualClock()
    sink = EventSink(clock)
    rec = Recorder()
    rec.follow(sink)
    breaker = CircuitBreaker("venue", threshold=1, reset_timeout_s=RESET_S, clock=clock,
                             sink=sink)
    breaker.record(False, trial=False)
    assert current_state(breaker) is BreakerState.OPEN
    assert breaker.admit() is Admit.REJECT
    clock.advance(RESET_S)
    assert breaker.admit() is Admit.TRIAL
    assert breaker.admit() is Admit.REJECT  # one trial at a time
    breaker.release_trial()  # that trial was refused before it started
    assert current_state(breaker) is BreakerState.HALF_OPEN
    assert breaker.admit() is Admit.TRIAL
    assert breaker.admit() is Admit.REJECT
    breaker.record(True, trial=True)
    assert current_state(breaker) is BreakerState.CLOSED
    assert breaker.admit() is Admit.ALLOW
    assert [e["type"] for e in rec.events] == [
        "circuit_opened", "circuit_half_open", "circuit_closed"]


def test_a_trial_refused_in_reduce_only_is_released_and_the_next_run_is_the_trial(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine, rec = breaker_engine(make_engine, clock)
    venue = Venue()
    # An action that does not reduce risk: REDUCE_ONLY refuses it at the gate.
    wf = Workflow("orders", nodes=[Node("order", venue, category="action", breaker="binance")])
    venue.mode = "fail"
    for _ in range(THRESHOLD):
        assert run(engine, wf).error_type == "ConnectionError"
    assert breaker_state(engine) == "open"
    clock.advance(RESET_S)

    engine.reduce_only("closing positions only")
    venue.mode = "ok"
    refused = run(engine, wf)
    assert venue.calls == THRESHOLD  # the trial was admitted by the breaker, not run
    assert len(circuit_events(rec, "circuit_half_open")) == 1
    assert refused.status == "completed"
    assert [(e["node_id"], e["reason"]) for e in rec.for_execution(refused.execution_id)
            if e["type"] == "node_skipped"] == [("order", "reduce_only")]

    engine.resume("positions closed")
    trial = run(engine, wf)
    assert (trial.status, trial.error_type) == ("completed", None)
    assert venue.calls == THRESHOLD + 1
    assert breaker_state(engine) == "closed"
    assert len(circuit_events(rec, "circuit_closed")) == 1


def test_a_trial_whose_execution_was_halted_before_it_started_is_released(
        make_engine: EngineFactory) -> None:
    clock = ManualClock()
    engine = make_engine({
        "daemon": {"supervisors": 1, "node_actors": 1},
        "resilience": {"breaker_failure_threshold": THRESHOLD,
                       "breaker_reset_timeout_s": RESET_S},
    }, clock=clock)
    rec = Recorder()
    rec.follow(engine)
    venue = Venue()
    wf = quote_workflow(venue)
    open_breaker(engine, venue, wf)
    clock.advance(RESET_S)

    hog_entered, hog_release = threading.Event(), threading.Event()

    def hog(ctx: NodeContext) -> str:
        hog_entered.set()
        hog_release.wait(10)
        return "hog"

    try:
        hog_handle = engine.submit(Workflow("hog", nodes=[Node("hog", hog)]))
        assert hog_entered.wait(5)
        venue.mode = "ok"
        trial_handle = engine.submit(wf)  # the trial waits for the only node actor
        rec.wait_for(lambda evs: any(e["type"] == "circuit_half_open" for e in evs))
        engine.halt("operator")
        trial = trial_handle.result(timeout=5)
        assert trial.status == "halted"
        assert venue.calls == THRESHOLD  # it never started
    finally:
        hog_release.set()
    assert hog_handle.result(timeout=5).status == "halted"
    # The node actor comes back from the hog, takes the trial run and is refused at the
    # gate; both runs are answered.
    wait_until(lambda: busy(engine) == 0)

    engine.resume("all clear")
    venue.mode = "ok"
    result = run(engine, wf)
    assert (result.status, result.error_type) == ("completed", None)
    assert venue.calls == THRESHOLD + 1
    assert breaker_state(engine) == "closed"


def test_runs_cancelled_by_a_halt_are_no_failures_of_the_venue(
        make_engine: EngineFactory) -> None:
    """Runs a halt cancelled, which then raise (an exchange call cut short), are no failed
    runs: they opened the breaker, and after the resume the venue was refused for
    breaker_reset_timeout_s."""
    clock = ManualClock()
    engine, _rec = breaker_engine(make_engine, clock)
    entered = threading.Semaphore(0)

    def cut_short(ctx: NodeContext) -> None:
        entered.release()
        ctx.cancelled.wait(10)
        raise ConnectionError("the call was cut short by the cancel")

    cancelled = Workflow("quotes", nodes=[
        Node("quote", cut_short, category="provider", breaker="binance")])
    handles = [engine.submit(cancelled) for _ in range(THRESHOLD + 1)]
    for _ in handles:
        assert entered.acquire(timeout=5)
    engine.halt("operator")
    assert [h.result(timeout=5).status for h in handles] == ["halted"] * len(handles)
    wait_until(lambda: busy(engine) == 0)  # every run came back, raising
    assert breaker_state(engine) == "closed"

    engine.resume("all clear")
    venue = Venue()
    result = run(engine, quote_workflow(venue))
    assert (result.status, venue.calls) == ("completed", 1)


def test_a_trial_cancelled_by_a_halt_neither_closes_nor_reopens(
        make_engine: EngineFactory) -> None:
    """A half-open trial whose execution is halted has no outcome: what it returns later
    closed the breaker (an untested venue let through). The next run is the trial."""
    engine, _rec, venue, wf = half_open(make_engine, ManualClock())
    venue.mode = "block"
    handle = engine.submit(wf)
    try:
        assert venue.entered.wait(5)
        engine.halt("operator")
        assert handle.result(timeout=5).status == "halted"
    finally:
        venue.release.set()  # it returns a price, after the halt
    wait_until(lambda: busy(engine) == 0)
    assert breaker_state(engine) == "half_open"

    engine.resume("all clear")
    venue.mode = "fail"
    failed = run(engine, wf)  # the next run is the trial: it fails and reopens
    assert (failed.error_type, breaker_state(engine)) == ("ConnectionError", "open")


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition that has no event of its own, with a deadline."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        pause.wait(0.005)
