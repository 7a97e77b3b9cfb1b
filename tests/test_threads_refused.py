"""The engine when the OS refuses a new thread (`RuntimeError: can't start new thread`,
from RLIMIT_NPROC or a full thread table): the failure is one log line, nothing is lost, and
what needed the thread works again once threads can be made. The node-actor pool; the event
log's done-callbacks thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors import Engine, ExecutionHandle, Node, Workflow
from actors.eventlog import EventLog
from actors.node import CORE_ACTORS, NodeActor
from tests.conftest import EngineFactory
from tests.test_engine_pool import blocked_io


class ThreadLimit:
    """`NodeActor.start` raising as `threading.Thread.start` does at the thread limit,
    while `refusing` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.refusing = threading.Event()
        self.refused = 0
        self.tried = threading.Event()  # set on the first refusal
        real = NodeActor.start.__func__  # type: ignore[attr-defined]

        def start(cls: type[NodeActor], *args: Any, **kwargs: Any) -> Any:
            if self.refusing.is_set():
                self.refused += 1
                self.tried.set()
                raise RuntimeError("can't start new thread")
            return real(cls, *args, **kwargs)

        monkeypatch.setattr(NodeActor, "start", classmethod(start))


@pytest.fixture
def thread_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[ThreadLimit]:
    yield ThreadLimit(monkeypatch)


def test_no_thread_for_the_first_actor_fails_the_execution_and_leaves_no_run_counted(
        make_engine: EngineFactory, thread_limit: ThreadLimit) -> None:
    engine: Engine = make_engine()
    wf = Workflow("one", nodes=[Node("a", lambda ctx: 1)])
    thread_limit.refusing.set()
    with capture_logs() as logs:
        failed = engine.submit(wf).result(timeout=5)
    assert failed.status == "failed"
    assert "can't start new thread" in str(failed.error), failed.error
    (line,) = [line for line in logs if line["log_level"] == "error"]  # one line says why
    assert "no thread for one (can't start new thread)" in line["error"]
    thread_limit.refusing.clear()
    assert engine.submit(wf).result(timeout=5).status == "completed"
    (stats,) = engine.supervisor_stats()
    assert stats["runs_in_flight"] == 0  # the refused run is not counted as handed out


def test_growth_refused_once_grows_again_when_threads_are_back(
        make_engine: EngineFactory, thread_limit: ThreadLimit) -> None:
    """The core actors are all blocked; the growth check cannot start another, then can:
    the pool grows and every blocked run gets inside its function."""
    engine: Engine = make_engine({"daemon": {"max_concurrent_executions": 100,
                                             "node_actors": 100}})
    wf, release, inside = blocked_io()
    handles = [engine.submit(wf) for _ in range(CORE_ACTORS)]
    try:
        for _ in range(CORE_ACTORS):
            assert inside.acquire(timeout=10)
        thread_limit.refusing.set()
        with capture_logs() as logs:
            handles.append(engine.submit(wf))
            assert thread_limit.tried.wait(5)  # the growth check tried, and was refused
            assert engine.supervisor_stats()[0]["node_actors"] == CORE_ACTORS
            thread_limit.refusing.clear()
            handles += [engine.submit(wf) for _ in range(3)]
            for _ in range(4):  # the refused run and the later ones all get an actor
                assert inside.acquire(timeout=5), engine.supervisor_stats()
        # (logged before the growth that let the runs in, on the supervisor's thread)
        assert [line["event"] for line in logs if line["log_level"] == "error"] == [
            "node_actor_start_failed"]
    finally:
        release.set()
    assert {h.result(timeout=10).status for h in handles} == {"completed"}


def test_done_callbacks_refused_their_thread_run_anyway_and_the_next_get_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_start = threading.Thread.start
    refusals: list[threading.Thread] = []

    def start(thread: threading.Thread) -> None:
        if thread.name == "tradeloom-done-callbacks" and not refusals:
            refusals.append(thread)
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    log = EventLog()
    ran: list[str] = []
    second = threading.Event()
    with capture_logs() as logs:
        log.hand_off([lambda: ran.append("first")])  # no thread: run here, now
    assert ran == ["first"]
    assert [line["event"] for line in logs] == ["done_callbacks_thread_failed"]
    log.hand_off([lambda: ran.append(threading.current_thread().name), second.set])
    assert second.wait(5)
    assert ran == ["first", "tradeloom-done-callbacks"]


@contextmanager
def every_core_actor_abandoned(engine: Engine,
                               thread_limit: ThreadLimit) -> Iterator[ExecutionHandle]:
    """Every core actor stuck in a node that overran its timeout (abandoned), the OS
    refusing threads, and one run waiting behind them (yielded); the stuck functions
    return on the way out (their actors then retire)."""
    blocked, release, inside = blocked_io()
    stuck = Workflow("stuck", nodes=[Node("io", blocked.nodes[0].fn, timeout_s=0.2,
                                          max_restarts=0)])
    handles = [engine.submit(stuck) for _ in range(CORE_ACTORS)]
    try:
        for _ in range(CORE_ACTORS):
            assert inside.acquire(timeout=10)
        thread_limit.refusing.set()
        waiting = engine.submit(Workflow("quick", nodes=[Node("q", lambda ctx: "ran")]))
        assert {h.result(timeout=10).error_type for h in handles} == {"NodeTimeout"}
        yield waiting
    finally:
        release.set()


def test_runs_waiting_behind_abandoned_actors_start_once_threads_are_back(
        make_engine: EngineFactory, thread_limit: ThreadLimit) -> None:
    """The run waiting behind abandoned actors whose replacements the OS refused starts
    once threads can be made again, with no later submit to re-arm the growth check."""
    engine: Engine = make_engine({"daemon": {"node_actors": CORE_ACTORS}})
    with every_core_actor_abandoned(engine, thread_limit) as waiting:
        stats = engine.supervisor_stats()[0]
        assert (stats["node_actors_abandoned"], stats["runs_in_flight"]) == (CORE_ACTORS, 1)
        assert thread_limit.refused >= 1  # its replacements were refused: it waits
        thread_limit.refusing.clear()
        assert waiting.result(timeout=5).results == {"q": "ran"}


def test_runs_waiting_after_every_abandoned_actor_retired_start_once_threads_are_back(
        make_engine: EngineFactory, thread_limit: ThreadLimit) -> None:
    """As above, but the stuck functions return (their actors retire) while threads are
    still refused: no actor is left to look blocked, and the run still starts once threads
    can be made again."""
    engine: Engine = make_engine({"daemon": {"node_actors": CORE_ACTORS}})
    with every_core_actor_abandoned(engine, thread_limit) as waiting:
        pass
    deadline = time.monotonic() + 10
    while engine.supervisor_stats()[0]["node_actors"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.supervisor_stats()[0]["node_actors"] == 0
    thread_limit.refusing.clear()
    assert waiting.result(timeout=5).results == {"q": "ran"}


def test_done_callbacks_handed_off_after_the_log_closed_still_run() -> None:
    """A journal's last commits at a stop come after the log's close: the callbacks they
    hand off were queued behind the thread's end mark, and never ran."""
    log = EventLog()
    ran: list[str] = []
    first, late = threading.Event(), threading.Event()
    log.hand_off([lambda: ran.append(threading.current_thread().name), first.set])
    assert first.wait(5)
    log.close_all(timeout=1)
    log.hand_off([lambda: ran.append(threading.current_thread().name), late.set])
    assert late.wait(5)
    assert ran == ["tradeloom-done-callbacks", "tradeloom-done-callbacks-late"]
