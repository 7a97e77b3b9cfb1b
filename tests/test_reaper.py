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
    """Records the thread each tracked object's `__del__` ran in; `hold` keeps them
    there (blocked) until `release`."""

    def __init__(self, hold: bool = False) -> None:
        self.threads: list[str] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()

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
        self.finalizers.threads.append(threading.current_thread().name)
        self.finalizers.entered.set()
        self.finalizers.released.wait(30)


@pytest.fixture
def finalizers() -> Iterator[Finalizers]:
    held = Finalizers(hold=True)
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
        reaper.close()


def test_a_stuck_finalizer_is_told_once() -> None:
    finalizers = Finalizers(hold=True)
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
        reaper.close()
