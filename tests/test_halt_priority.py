"""HaltPriority (actors/interpreter.py): its rules on their own, what gives way to a halt
(the journal writer, the wake-ups of waiting nodes), and everything that waits on the
journal while a halt holds it.

The journal writer gives way to a halt once the halt's state change is committed
(actors/interpreter.py). These tests look for a reply that waits, under a hold, for a
commit the writer holds back. `HALT_GIVE_WAY_S` is raised to 30 s so that such a wait shows
up as a timeout (or a reply sent before its commit) rather than a 100 ms stall.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from actors import (
    EmergencyState,
    Engine,
    Node,
    NodeContext,
    Workflow,
    journal_writer,
    supervisor,
)
from actors.execution import ExecutionHandle
from actors.interpreter import REPLY_S, HaltPriority
from actors.messages import Halt, Resume
from tests.conftest import EngineFactory

DEADLINE_S = 10.0


def give_way_in_thread(priority: HaltPriority, committed_seq: int,
                       max_s: float = 30.0) -> threading.Event:
    returned = threading.Event()

    def run() -> None:
        priority.give_way(committed_seq, max_s)
        returned.set()

    threading.Thread(target=run, daemon=True).start()
    return returned


def test_a_writer_already_giving_way_goes_on_when_a_later_change_is_named() -> None:
    priority = HaltPriority()
    with priority.hold():
        priority.first(5)
        held = give_way_in_thread(priority, 5)
        assert not held.wait(0.05)  # the HALT (5) is committed: the writer waits
        priority.first(9)  # a later halt's (or a later change's) reply waits for 9
        assert held.wait(DEADLINE_S)


def test_a_lower_seq_named_later_does_not_lower_what_is_committed_first() -> None:
    priority = HaltPriority()
    with priority.hold():
        priority.first(9)
        priority.first(5)
        assert give_way_in_thread(priority, 5).wait(DEADLINE_S)  # 9 is not committed


class _PausingRef:
    """The engine's EmergencyActor ref, pausing a halt's caller between the actor's reply
    and what it reads next: where another caller's change lands in real life by chance."""

    def __init__(self, real: Any, between: threading.Event) -> None:
        self._real = real
        self._between = between
        self.halt_replied = threading.Event()
        self.resumed = threading.Event()

    def ask(self, message: Any, **kwargs: Any) -> Any:
        reply = self._real.ask(message, **kwargs)
        if type(message) is Halt and not self.halt_replied.is_set():
            self.halt_replied.set()
            if not self._between.wait(3 * DEADLINE_S):  # (longer than any wait of the test)
                raise AssertionError("the other caller never got its reply")
        elif type(message) is Resume:
            self.resumed.set()
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _in_thread(call: Any) -> tuple[threading.Event, list[Any]]:
    done = threading.Event()
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


@pytest.mark.parametrize("then_halt", [False, True], ids=["resume", "resume_then_halt"])
def test_overlapping_halt_and_resume_replies_wait_for_their_commits_not_the_give_way(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        then_halt: bool) -> None:
    """A halt's caller, between its reply and its commit wait, still holds the priority
    when another caller resumes (and maybe halts again): the newest change is what both
    replies wait for, and the writer, already giving way once the first HALT was
    committed, must commit it rather than wait for the holds to end."""
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", 30.0)
    engine: Engine = make_engine({"daemon": {"data_dir": str(tmp_path)}})
    durable = engine._durable
    assert durable is not None
    journal = durable.journal
    between = threading.Event()
    ref = _PausingRef(engine._emergency, between)
    engine._emergency = ref  # type: ignore[assignment]

    def halt_and_look() -> tuple[dict[str, Any], int]:
        reply = engine.halt("first")
        return reply, journal.last_committed_seq()  # what was committed when it replied

    first_done, first_out = _in_thread(halt_and_look)
    assert ref.halt_replied.wait(DEADLINE_S)
    halt_seq = engine.gate.history[-1]["seq"]
    assert journal.wait_committed(halt_seq, DEADLINE_S)
    resume_done, resume_out = _in_thread(lambda: engine.resume("back"))
    assert ref.resumed.wait(DEADLINE_S)
    later_done: threading.Event | None = None
    later_out: list[Any] = []
    if then_halt:
        later_done, later_out = _in_thread(lambda: engine.halt("again"))
        assert journal.wait_committed(halt_seq + 1, DEADLINE_S), "the resume was held back"
        assert later_done.wait(DEADLINE_S), "the later halt's reply was held back"
    newest = engine.gate.history[-1]["seq"]
    between.set()
    assert first_done.wait(DEADLINE_S), "the first halt's reply was held back"
    assert resume_done.wait(DEADLINE_S), "the resume's reply was held back"
    reply, committed_at_reply = first_out[0]
    assert reply["state"] == "HALT"
    assert committed_at_reply >= newest, "the halt gave up waiting for its commit (held back)"
    assert not isinstance(resume_out[0], BaseException)
    if then_halt:
        assert later_out[0]["state"] == "HALT"
        assert engine.state.value == "HALT"
    assert journal.last_committed_seq() >= newest


# -- everything else that waits on the journal while a halt holds the priority -------------


def _held_workflow(entered: threading.Semaphore) -> Workflow:
    def provider(ctx: NodeContext) -> None:
        entered.release()
        ctx.cancelled.wait(DEADLINE_S)

    return Workflow("held", nodes=[Node("price", provider, category="provider")])


def _running(engine: Engine, count: int) -> list[ExecutionHandle]:
    entered = threading.Semaphore(0)
    workflow = _held_workflow(entered)
    handles = [engine.submit(workflow) for _ in range(count)]
    for _ in handles:
        assert entered.acquire(timeout=DEADLINE_S)
    return handles


def _halt_commits_before_reply(engine: Engine, reason: str) -> tuple[int, int]:
    """Halt; returns (the HALT's seq, the committed seq when the reply came)."""
    journal = engine.journal
    assert journal is not None
    engine.halt(reason)
    committed = journal.last_committed_seq()
    halts = [entry for entry in engine.gate.history if entry["state"] == "HALT"]
    return halts[-1]["seq"], committed


def test_halts_from_many_threads_with_a_hook_and_executions_all_answer_committed(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four callers halt at once while executions run; an on-halt hook's action waits for
    its intent's commit. No reply waits for what the writer holds back, each comes after
    the HALT is committed, the hook runs, and the engine stops at once afterwards."""
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", 30.0)
    hooked = threading.Event()
    hook = Workflow("cancel_all", nodes=[
        Node("cancel", lambda ctx: hooked.set(), category="action")])
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}}, on_halt=[hook])
    handles = _running(engine, 8)
    calls = [_in_thread(lambda i=i: _halt_commits_before_reply(engine, f"halt {i}"))
             for i in range(4)]
    for done, out in calls:
        assert done.wait(DEADLINE_S), "a halt's reply was held back"
        halt_seq, committed = out[0]
        assert committed >= halt_seq, "a halt replied before its HALT was committed"
    for handle in handles:
        assert handle.result(timeout=DEADLINE_S).status == "halted"
    assert hooked.wait(DEADLINE_S), "the hook's action waited for a held-back commit"
    stopped = _in_thread(lambda: engine.stop(timeout=5.0))[0]
    assert stopped.wait(DEADLINE_S)


def test_a_risk_limit_that_halts_answers_once_everything_before_it_is_committed(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A risk update that halts holds the priority in its broadcast only: its reply's wait
    (for everything queued, the halted executions' events included) is not held back,
    also while a second caller halts at the same time."""
    monkeypatch.setattr(journal_writer, "HALT_GIVE_WAY_S", 30.0)
    engine = make_engine({"daemon": {"data_dir": str(tmp_path)}, "emergency": {"limits": [
        {"name": "pos", "kind": "position_size", "threshold": 10.0, "auto_halt": True}]}})
    journal = engine.journal
    assert journal is not None
    handles = _running(engine, 8)
    risk_done, risk_out = _in_thread(lambda: (engine.risk_update("pos", value=20.0),
                                              journal.last_committed_seq()))
    halt_done, halt_out = _in_thread(lambda: _halt_commits_before_reply(engine, "operator"))
    assert risk_done.wait(DEADLINE_S) and halt_done.wait(DEADLINE_S)
    halt_seq, committed = halt_out[0]
    assert committed >= halt_seq
    assert risk_out[0][1] >= halt_seq
    assert engine.state is EmergencyState.HALT
    for handle in handles:
        assert handle.result(timeout=DEADLINE_S).status == "halted"


# -- HaltPriority: the journal writer gives way to a halt, never before its state change ----


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
