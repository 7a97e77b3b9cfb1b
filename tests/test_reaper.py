"""User objects are freed off the supervisors' threads (actors/reaper.py): a node output
whose `__del__` blocks (a client closing its connection) held up every execution while it
blocked, when nobody kept the execution's handle (a daemon's submits, interval triggers).
Real engines and threads; every wait has a deadline."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from actors import Engine, Node, NodeContext, Workflow
from actors.cache import ProviderCache
from actors.clock import ManualClock
from actors.reaper import STUCK_BATCHES, Reaper
from tests.conftest import EngineFactory
from tests.engine_journal_helpers import captured_logs, eventually


class Finalizers:
    """Records the thread each tracked object's `__del__` ran in (`threads`, on entry;
    `finished`, on return); each stays there `hold_s` unless `released` is set first."""

    def __init__(self, hold_s: float = 0.0) -> None:
        self.threads: list[str] = []
        self.finished: list[str] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        self.hold_s = hold_s

    def make(self) -> Tracked:
        return Tracked(self)


class Tracked:
    """A node output that is not plain data, with a `__del__` (and a `__deepcopy__` that
    hands out itself: a result's private copy must not make a second one)."""

    def __init__(self, finalizers: Finalizers) -> None:
        self.finalizers = finalizers

    def __deepcopy__(self, memo: dict[int, Any]) -> Tracked:
        return self

    def __del__(self) -> None:
        finalizers = self.finalizers
        finalizers.threads.append(threading.current_thread().name)
        finalizers.entered.set()
        if finalizers.hold_s:
            finalizers.released.wait(finalizers.hold_s)
        finalizers.finished.append(threading.current_thread().name)


@pytest.fixture
def finalizers() -> Iterator[Finalizers]:
    held = Finalizers(hold_s=30)
    yield held
    held.released.set()  # never leave a thread blocked past the test


def finished_events(engine: Engine, workflow_id: str) -> threading.Event:
    done = threading.Event()
    engine.subscribe(lambda event: done.set(), types={"execution_completed",
                                                      "execution_failed"},
                     workflow_id=workflow_id)
    return done


def quick() -> Workflow:
    return Workflow("quick", nodes=[Node("q", lambda ctx: 1)])


def test_an_output_whose_del_blocks_holds_up_no_execution(
        make_engine: EngineFactory, finalizers: Finalizers) -> None:
    engine = make_engine()
    done = finished_events(engine, "blocking_del")
    engine.submit(Workflow("blocking_del", nodes=[
        Node("client", lambda ctx: finalizers.make(), category="provider")]))  # not kept
    assert done.wait(10)
    # Its __del__ blocks from the moment it runs until released: on the supervisor's thread
    # these would never finish.
    for _ in range(3):
        assert engine.submit(quick()).result(timeout=10).status == "completed"
    eventually(finalizers.entered.is_set, what="the output freed")
    assert finalizers.threads == ["tradeloom-reaper"]
    assert engine.submit(quick()).result(timeout=10).status == "completed"


def test_an_idle_supervisor_still_hands_its_last_execution_over(
        make_engine: EngineFactory) -> None:
    finalizers = Finalizers()
    engine = make_engine()
    engine.submit(Workflow("last_one", nodes=[
        Node("client", lambda ctx: finalizers.make(), category="provider")]))
    eventually(lambda: bool(finalizers.threads), what="freed with nothing submitted after it")
    assert finalizers.threads == ["tradeloom-reaper"]


class EagerReaper(Reaper):
    """Frees each batch at once, before `bury` returns (in a thread of the reaper's name):
    the reaper's references are then the last only if nothing else held the batch's
    objects when it was handed over."""

    def bury(self, batch: list[object]) -> None:
        thread = threading.Thread(target=batch.clear, name="tradeloom-reaper")
        thread.start()
        thread.join()


def test_a_batch_is_handed_over_once_the_message_it_was_made_in_is_gone(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actors.engine.Reaper", EagerReaper)
    finalizers = Finalizers()
    engine = make_engine()
    for _ in range(20):
        engine.submit(Workflow("eager", nodes=[
            Node("client", lambda ctx: finalizers.make(), category="provider")]))
    eventually(lambda: len(finalizers.threads) == 20, what="all freed")
    assert set(finalizers.threads) == {"tradeloom-reaper"}


def test_an_execution_a_node_failed_in_is_freed_by_the_reaper(
        make_engine: EngineFactory) -> None:
    finalizers = Finalizers()

    def boom(ctx: NodeContext) -> None:
        client = ctx.upstream["client"]  # a local of a frame the traceback would hold
        raise ConnectionError(f"exchange hung up on {type(client).__name__}")

    engine = make_engine()
    engine.submit(Workflow("failing", nodes=[
        Node("client", lambda ctx: finalizers.make(), category="provider"),
        Node("order", boom, depends_on=["client"], max_restarts=0)]))
    eventually(lambda: bool(finalizers.threads), what="freed without the cyclic collector")
    assert finalizers.threads == ["tradeloom-reaper"]


def test_a_stop_frees_what_its_executions_held_before_it_returns(
        make_engine: EngineFactory) -> None:
    finalizers = Finalizers(hold_s=0.3)  # a __del__ that takes a while: stop waits for it
    gate = threading.Event()
    started = threading.Event()

    def wait(ctx: NodeContext) -> int:
        started.set()
        gate.wait(10)
        return 1

    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    try:
        engine.submit(Workflow("busy", nodes=[Node("w", wait)]))
        assert started.wait(10)
        engine.submit(Workflow("queued", nodes=[Node("q", lambda ctx: 1)]),
                      inputs={"client": finalizers.make()})  # queued: ends cancelled
        engine.stop(timeout=5)
        assert finalizers.finished == ["tradeloom-reaper"]
    finally:
        gate.set()


def test_a_late_output_of_an_ended_execution_is_not_freed_on_a_supervisor(
        make_engine: EngineFactory) -> None:
    finalizers = Finalizers()
    gate = threading.Event()

    def late(ctx: NodeContext) -> Tracked:
        gate.wait(10)
        return finalizers.make()

    def boom(ctx: NodeContext) -> None:
        raise ValueError("fails fast")

    engine = make_engine()
    done = finished_events(engine, "late_del")
    engine.submit(Workflow("late_del", nodes=[Node("late", late), Node("boom", boom)]))
    assert done.wait(10)
    gate.set()  # the cancelled sibling returns after its execution ended
    for _ in range(200):
        if finalizers.threads:
            break
        engine.submit(quick()).result(timeout=10)  # messages that move the graveyard on
    eventually(lambda: bool(finalizers.threads), what="the late output freed")
    assert not finalizers.threads[0].startswith("SupervisorActor"), finalizers.threads


def test_the_cache_lets_expired_and_replaced_entries_go_to_the_reaper() -> None:
    finalizers = Finalizers()
    clock = ManualClock()
    reaper = Reaper()
    cache = ProviderCache(clock, max_entries=2, reaper=reaper)
    try:
        cache.put("wf", "n", "a", finalizers.make(), ttl_s=1.0)
        clock.advance(2.0)
        assert cache.get("wf", "n", "a") == (False, None)  # expired: let go
        cache.put("wf", "n", "b", finalizers.make(), ttl_s=10.0)
        cache.put("wf", "n", "b", finalizers.make(), ttl_s=10.0)  # replaces the first b
        cache.put("wf", "n", "c", finalizers.make(), ttl_s=10.0)
        cache.put("wf", "n", "d", finalizers.make(), ttl_s=10.0)  # full: the oldest goes
        eventually(lambda: len(finalizers.threads) == 3, what="three entries freed")
        assert finalizers.threads == ["tradeloom-reaper"] * 3
        assert cache.get("wf", "n", "d")[0] and cache.get("wf", "n", "c")[0]
    finally:
        reaper.close(5)


def test_a_batch_given_after_close_is_still_freed() -> None:
    finalizers = Finalizers()
    reaper = Reaper()
    reaper.bury([finalizers.make()])
    assert reaper.close(5)
    assert finalizers.threads == ["tradeloom-reaper"]
    reaper.bury([finalizers.make()])  # a supervisor that stopped late
    assert reaper.close(5)
    assert finalizers.threads == ["tradeloom-reaper"] * 2


def test_a_stuck_finalizer_is_told_once() -> None:
    finalizers = Finalizers(hold_s=30)
    reaper = Reaper()
    try:
        with captured_logs() as logs:
            reaper.bury([finalizers.make()])
            assert finalizers.entered.wait(10)
            for _ in range(STUCK_BATCHES + 5):
                reaper.bury([])
        told = [e for e in logs if e["event"] == "finalizer_stuck"]
        assert len(told) == 1 and told[0]["batches_waiting"] > STUCK_BATCHES
    finally:
        finalizers.released.set()
        reaper.close(5)
