"""A halt holds a short GIL switch interval from the call to the reply, then puts it back."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors import Engine, Node, Workflow, journal_writer, supervisor
from actors.interpreter import HALT_SWITCH_INTERVAL_S, REPLY_S, HaltPriority, quick_handoffs
from actors.messages import Halt
from tests.conftest import EngineFactory

DEADLINE_S = 10.0


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[float]:
    found = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(found)


def test_within_it_the_interval_is_short_and_after_it_what_it_was() -> None:
    with quick_handoffs():
        assert sys.getswitchinterval() == pytest.approx(HALT_SWITCH_INTERVAL_S)
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_overlapping_holds_put_it_back_when_the_last_ends() -> None:
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[float] = []

    def other() -> None:
        with quick_handoffs():
            first_in.set()
            second_out.wait(10)
            seen.append(sys.getswitchinterval())

    thread = threading.Thread(target=other)
    thread.start()
    assert first_in.wait(10)
    with quick_handoffs():
        pass  # ends while the other still holds it
    assert sys.getswitchinterval() == pytest.approx(HALT_SWITCH_INTERVAL_S)
    second_out.set()
    thread.join(10)
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_shorter_interval_set_by_the_program_is_kept() -> None:
    sys.setswitchinterval(0.0001)
    with quick_handoffs():
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)
    assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.05)


def test_it_is_put_back_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError), quick_handoffs():
        raise RuntimeError("boom")
    assert sys.getswitchinterval() == pytest.approx(0.005)


def watch_interval(engine: Engine) -> list[float]:
    """Record the switch interval where the halt broadcast waits for actions to begin."""
    seen: list[float] = []
    gate = engine.gate
    original = gate.wait_actions_begun

    def recording(timeout: float) -> Any:
        seen.append(sys.getswitchinterval())
        return original(timeout)

    gate.wait_actions_begun = recording  # type: ignore[method-assign]
    return seen


def test_engine_halt_holds_it_through_the_broadcast_and_the_commit(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    seen = watch_interval(engine)
    durable = engine._durable
    assert durable is not None
    original = durable.wait_commit
    commit_seen: list[float] = []

    def recording_commit(*args: Any, **kwargs: Any) -> bool:
        commit_seen.append(sys.getswitchinterval())
        return original(*args, **kwargs)

    durable.wait_commit = recording_commit  # type: ignore[method-assign]
    assert engine.halt("test")["state"] == "HALT"
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert commit_seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


def test_a_halt_told_to_the_actor_holds_it_through_the_broadcast(
        make_engine: EngineFactory) -> None:
    engine = make_engine()
    seen = watch_interval(engine)
    reply = engine.ref.ask(Halt(reason="test"), timeout=10)
    assert isinstance(reply, dict) and reply["state"] == "HALT"
    assert seen == [pytest.approx(HALT_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == pytest.approx(0.005)


# -- HaltPriority: the journal writer gives way to a halt, never before its state change ----


def give_way_in_thread(priority: HaltPriority, committed_seq: int,
                       max_s: float = 30.0) -> threading.Event:
    returned = threading.Event()

    def run() -> None:
        priority.give_way(committed_seq, max_s)
        returned.set()

    threading.Thread(target=run, daemon=True).start()
    return returned


def test_with_no_halt_under_way_it_does_not_wait() -> None:
    priority = HaltPriority()
    assert give_way_in_thread(priority, 10).wait(DEADLINE_S)


def test_a_halt_holds_back_only_work_after_its_state_change() -> None:
    priority = HaltPriority()
    with priority.hold():
        assert give_way_in_thread(priority, 10).wait(DEADLINE_S)  # state change not known
        priority.first(11)
        assert give_way_in_thread(priority, 10).wait(DEADLINE_S)  # not committed yet
        held = give_way_in_thread(priority, 11)
        assert not held.wait(0.05)
    assert held.wait(DEADLINE_S)  # the reply is out: the writer goes on


def test_nested_holds_release_with_the_last() -> None:
    priority = HaltPriority()
    with priority.hold():
        priority.first(5)
        with priority.hold():
            pass
        held = give_way_in_thread(priority, 5)
        assert not held.wait(0.05)
    assert held.wait(DEADLINE_S)
    priority.first(5)  # a later broadcast's seq outside a hold holds nothing back
    assert give_way_in_thread(priority, 9).wait(DEADLINE_S)


def test_a_hold_that_never_ends_holds_the_writer_back_only_max_s() -> None:
    priority = HaltPriority()
    with priority.hold():
        priority.first(1)
        assert give_way_in_thread(priority, 1, max_s=0.05).wait(DEADLINE_S)


def test_during_a_halt_the_journal_commits_its_state_change_and_holds_the_rest(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", 30.0)
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    durable = engine._durable
    assert durable is not None
    writer = durable.journal._writer
    halt_seq: list[int] = []
    asked_after_halt = threading.Event()  # the writer, with the HALT committed, asks to go on
    reply_out = threading.Event()
    went_on_early: list[int] = []
    real_give_way = writer.give_way

    def give_way(committed_seq: int, max_s: float) -> None:
        history = engine.gate.history  # (the HALT's seq is there before its broadcast)
        if history and history[-1]["state"] == "HALT" and committed_seq >= history[-1]["seq"]:
            asked_after_halt.set()
        real_give_way(committed_seq, max_s)
        if asked_after_halt.is_set() and not reply_out.is_set():
            went_on_early.append(committed_seq)

    writer.give_way = give_way
    real_wait_commit = durable.wait_commit

    def wait_commit(*args: Any, **kwargs: Any) -> bool:
        if "upto_seq" not in kwargs or halt_seq:  # not the halt's (the engine's stop)
            return real_wait_commit(*args, **kwargs)
        halt_seq.append(kwargs["upto_seq"])
        committed = real_wait_commit(*args, **kwargs)  # the HALT is not held back
        assert asked_after_halt.wait(DEADLINE_S), "the halted executions' events never came"
        assert durable.journal.last_committed_seq() == halt_seq[0]
        reply_out.set()
        return committed

    durable.wait_commit = wait_commit  # type: ignore[method-assign]
    entered = threading.Semaphore(0)

    def provider(ctx: Any) -> None:
        entered.release()
        ctx.cancelled.wait(DEADLINE_S)

    wf = Workflow("held", nodes=[Node("price", provider, category="provider")])
    handles = [engine.submit(wf) for _ in range(5)]
    for _ in handles:
        assert entered.acquire(timeout=DEADLINE_S)
    assert engine.halt("test")["state"] == "HALT"
    for handle in handles:
        assert handle.result(timeout=DEADLINE_S).status == "halted"
    assert durable.journal.wait_committed(engine.status()["last_seq"], DEADLINE_S)
    assert went_on_early == []


def test_a_halt_while_halted_is_not_held_back_by_its_own_priority(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Its reply waits for the HALT in force; waiting for everything queued instead would
    # wait for the writer that gives way to this very halt (HALT_GIVE_WAY_S: 30 s here).
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", 30.0)
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    assert engine.halt("first")["state"] == "HALT"
    done = threading.Event()
    replies: list[dict[str, Any]] = []

    def again() -> None:
        replies.append(engine.halt("again"))
        replies.append(engine.ref.ask(Halt(reason="and again"), block=True, timeout=30))
        done.set()

    threading.Thread(target=again, daemon=True).start()
    assert done.wait(DEADLINE_S), "a halt while halted waited for the writer's give-way"
    assert [r["state"] for r in replies] == ["HALT", "HALT"]


def test_quiet_only_once_the_reply_has_had_time_to_reach_an_asker() -> None:
    priority = HaltPriority()
    assert priority.quiet(time.monotonic())
    with priority.hold():
        assert not priority.quiet(time.monotonic() + 60)
    released = time.monotonic()
    assert not priority.quiet(released)
    assert priority.quiet(released + REPLY_S + 0.001)


def test_nodes_waiting_on_their_cancel_event_are_woken_once_the_halts_reply_is_out(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # More than _WAKE_INLINE waiting nodes: their wake-up is deferred past the reply, so a
    # thousand threads waking do not keep the halt's caller from it.
    monkeypatch.setattr(supervisor, "WAKE_HOLD_MAX_S", 30.0)
    n = supervisor._WAKE_INLINE + 36
    engine = make_engine({"daemon": {"node_actors": n, "max_concurrent_executions": n}})
    entered, left = threading.Semaphore(0), threading.Semaphore(0)

    def provider(ctx: Any) -> None:
        entered.release()
        ctx.cancelled.wait(DEADLINE_S * 3)
        left.release()

    wf = Workflow("waiting", nodes=[Node("price", provider, category="provider")])
    handles = [engine.submit(wf) for _ in range(n)]
    for _ in handles:
        assert entered.acquire(timeout=DEADLINE_S)
    with engine.gate.priority.hold():  # as if the halt's reply were still on its way
        assert engine.halt("test")["state"] == "HALT"
        assert not left.acquire(timeout=0.2), "a node was woken before the reply was out"
    for _ in handles:
        assert left.acquire(timeout=DEADLINE_S)
    assert {h.result(timeout=DEADLINE_S).status for h in handles} == {"halted"}
