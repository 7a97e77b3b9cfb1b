"""Nothing is ever stranded: queued executions, hung nodes, failing callbacks, callbacks
that call back into the engine, a stop racing with submits."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from actors import (
    Config,
    ConfigError,
    Engine,
    ExecutionHandle,
    ManualClock,
    Node,
    NodeContext,
    TradeloomError,
    Workflow,
)
from actors.timers import TimerHeap
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import captured_logs, eventually


def blocking_workflow(release: threading.Event, entered: threading.Event) -> Workflow:
    def hold(ctx: NodeContext) -> int:
        entered.set()
        release.wait(20)
        return 1

    return Workflow("blocker", nodes=[Node("hold", hold, category="provider")])


def test_hundreds_of_queued_executions_that_end_at_once_all_resolve(
        make_engine: EngineFactory) -> None:
    # Each queued execution ends the moment it starts (a cache hit): starting the next one
    # must not recurse, or a few hundred of them overflow the stack and strand the rest.
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    cached = Workflow("cached", nodes=[
        Node("price", lambda ctx: 42, category="provider", cache_ttl_s=60.0)])
    assert engine.submit(cached).result(timeout=5).status == "completed"
    release, entered = threading.Event(), threading.Event()
    blocker = engine.submit(blocking_workflow(release, entered))
    assert entered.wait(5)
    queued = [engine.submit(cached) for _ in range(1500)]
    release.set()
    assert blocker.result(timeout=10).status == "completed"
    assert {h.result(timeout=30).status for h in queued} == {"completed"}
    assert engine.status()["running"] == 0


def test_a_hung_node_does_not_block_executions_behind_it(make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"node_actors": 1}})
    hang = threading.Event()
    try:
        hung = Workflow("hung", nodes=[
            Node("stuck", lambda ctx: hang.wait(20), category="provider", timeout_s=0.2,
                 max_restarts=0)])
        quick = Workflow("quick", nodes=[Node("fast", lambda ctx: 1)])
        first = engine.submit(hung)
        second = engine.submit(quick)  # waits in the mailbox behind the hung node
        assert first.result(timeout=5).error_type == "NodeTimeout"
        assert second.result(timeout=5).status == "completed"
    finally:
        hang.set()


def test_a_failing_done_callback_loses_nothing(make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    release, entered = threading.Event(), threading.Event()
    first = engine.submit(blocking_workflow(release, entered))
    called: list[ExecutionHandle] = []
    ran = threading.Event()

    def failing_callback(handle: ExecutionHandle) -> None:
        called.append(handle)
        ran.set()
        raise ZeroDivisionError("a caller's bug")

    first.add_done_callback(failing_callback)
    assert entered.wait(5)
    second = engine.submit(Workflow("next", nodes=[Node("n", lambda ctx: 2)]))
    assert not ran.is_set()
    with captured_logs() as logs:  # (else its traceback lands on the terminal, late)
        release.set()
        assert first.result(timeout=5).status == "completed"
        assert ran.wait(5), "the done-callback never ran"
        eventually(lambda: any(e["event"] == "done_callback_failed"
                               and e["execution_id"] == first.execution_id for e in logs),
                   5, "the callback's failure logged")
    assert called == [first]
    # Nothing was lost to it: the queued execution it preceded starts and completes, and
    # a callback added afterwards runs at once.
    assert second.result(timeout=5).status == "completed"
    later: list[ExecutionHandle] = []
    first.add_done_callback(later.append)
    assert later == [first]
    assert called == [first]


def test_callbacks_may_read_status_and_unsubscribe_but_not_wait_on_the_engine(
        engine: Engine) -> None:
    seen: list[object] = []
    refused: list[BaseException] = []

    def one_shot(event: dict[str, object]) -> None:
        seen.append(engine.status()["last_seq"])
        subscription.close()
        try:
            engine.halt("from a callback")
        except TradeloomError as exc:
            refused.append(exc)

    subscription = engine.subscribe(one_shot, types={"execution_completed"})
    wf = Workflow("cb", nodes=[Node("n", lambda ctx: 1)])
    assert engine.submit(wf).result(timeout=5).status == "completed"
    assert engine.submit(wf).result(timeout=5).status == "completed"
    assert len(seen) == 1  # closed itself after the first
    assert len(refused) == 1 and "engine.ref.tell" in str(refused[0])
    assert engine.state.value == "NORMAL"


def test_stop_resolves_every_submitted_handle(make_engine: EngineFactory) -> None:
    engine = make_engine({"daemon": {"max_concurrent_executions": 5}})
    release = threading.Event()
    wf = Workflow("slow", nodes=[Node("n", lambda ctx: release.wait(0.05))])
    handles = [engine.submit(wf) for _ in range(200)]
    engine.stop(timeout=5)
    release.set()
    statuses = {h.result(timeout=5).status for h in handles}
    assert statuses <= {"completed", "cancelled"}


def test_timers_handled_while_the_heap_is_swept_fire_once() -> None:
    clock = ManualClock()
    heap = TimerHeap(clock, alive=lambda entry: True)
    for i in range(5000):
        heap.push(clock.monotonic() + 1.0, 0, i)
    clock.advance(2.0)
    fired = []
    for _, target, _ in heap.pop_due():
        fired.append(target)
        heap.push(clock.monotonic() + 60.0, 1, "later")  # pushes may trigger a sweep
    assert sorted(fired) == list(range(5000))
    assert heap.pop_due() == []


def test_an_action_rate_below_one_per_second_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"emergency.limits\[0\].threshold"):
        Config.from_dict({"emergency": {"limits": [
            {"name": "r", "kind": "action_rate", "threshold": 0.5, "auto_halt": False}]}})


def test_keys_into_a_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    proc = subprocess.run([sys.executable, "-m", "actors.cli", "keys", str(target)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr
