"""Action intents through the engine: committed before the action's function is called,
resolved by what the engine saw, left open (with the late result) when it cannot know,
an operator's reconciliation, HALT while an action waits for its intent's commit, and
intents left open by one run seen by the next (logged, or HALT with
`[journal] halt_on_unresolved_intents`)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog.testing

from actors import EmergencyState, NodeContext
from actors.errors import NotFound
from actors.journal_failure_mark import MARK_NAME
from tests.conftest import EngineFactory, Recorder, state_now
from tests.engine_journal_helpers import (
    Action,
    Disk,
    captured_logs,
    eventually,
    journal_config,
    journal_of,
    raw_rows,
    trade_workflow,
)


def by_key(intents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["idempotency_key"]: i for i in intents}


def leave_an_open_intent(make_engine: EngineFactory, config: dict[str, Any]) -> str:
    """Run an engine on `config` until an action times out (its intent stays open), stop
    it; the intent's idempotency key."""
    first = make_engine(config)
    action = Action(block=True)
    handle = first.submit(trade_workflow("wf", action, timeout_s=0.05))
    assert handle.result(5).error_type == "NodeTimeout"  # its intent stays open
    first.stop()
    action.release.set()
    return f"{handle.execution_id}:trade"


def test_an_intent_is_on_disk_before_its_action_runs_and_resolved_by_its_outcome(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    Disk(journal_of(engine)).slow(0.02)  # an action that did not wait would miss its intent

    def look(ctx: NodeContext) -> tuple[list[str], list[tuple[Any, ...]]]:
        listed = [i["idempotency_key"] for i in engine.intents(unresolved=True)]
        on_disk = raw_rows(tmp_path, "SELECT execution_id, node_id, attempt, outcome FROM "
                                     "intents WHERE idempotency_key = ?", (ctx.idempotency_key,))
        return listed, on_disk

    action = Action(look)
    result = engine.submit(trade_workflow("wf", action)).result(5)
    assert result.status == "completed"
    key = f"{result.execution_id}:trade"
    assert action.calls == [key]
    listed, on_disk = action.seen[0]
    assert key in listed
    assert on_disk == [(result.execution_id, "trade", 1, None)]
    intent = by_key(engine.intents(unresolved=False))[key]
    assert (intent["outcome"], intent["node_id"], intent["attempt"]) == ("completed", "trade", 1)
    assert key not in by_key(engine.intents())

    raising = Action(raises=ConnectionResetError("exchange hung up"))
    failed = engine.submit(trade_workflow("wf", raising)).result(5)
    assert failed.status == "failed"
    intent = by_key(engine.intents(unresolved=False))[f"{failed.execution_id}:trade"]
    assert intent["outcome"] == "failed"
    assert intent["detail"]["error_type"] == "ConnectionResetError"
    providers = [i for i in engine.intents(unresolved=False) if i["node_id"] != "trade"]
    assert providers == [], "only actions have intents"


def test_a_timed_out_action_stays_open_with_its_late_result_until_resolved(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    action = Action(block=True)
    result = engine.submit(trade_workflow("wf", action, timeout_s=0.2)).result(5)
    assert (result.status, result.error_type) == ("failed", "NodeTimeout")
    key = f"{result.execution_id}:trade"
    assert by_key(engine.intents())[key]["outcome"] is None
    action.release.set()  # the exchange answers after all
    eventually(lambda: by_key(engine.intents())[key]["detail"] is not None,
               what="the late result recorded")
    intent = by_key(engine.intents())[key]
    assert intent["outcome"] is None, "the engine cannot know: it stays for an operator"
    assert intent["detail"]["ok"] is True
    assert intent["detail"]["why"] == "timed out"
    assert intent["detail"]["value"] == {"order": key, "n": None}

    assert engine.resolve_intent(key, "unknown", "asked the exchange") == {
        "idempotency_key": key, "outcome": "unknown"}, "the control op's result"
    saved = structlog.get_config()  # (the suite's set-up drops warnings)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    try:
        with structlog.testing.capture_logs() as logs:
            assert engine.resolve_intent(key, "filled", "seen on the exchange") == {
                "idempotency_key": key, "outcome": "filled"}
            # The same answer again (a retry after a lost reply) replaces nothing.
            engine.resolve_intent(key, "filled", "seen on the exchange")
    finally:
        structlog.configure(**saved)
    replaced = [line for line in logs if line["event"] == "intent_resolution_replaced"]
    assert [(line["log_level"], line["idempotency_key"], line["previous_outcome"],
             line["previous_note"], line["outcome"]) for line in replaced] == [
        ("warning", key, "unknown", "asked the exchange", "filled")]
    assert replaced[0]["previous_resolved_at"] is not None
    assert key not in by_key(engine.intents())
    resolved = by_key(engine.intents(unresolved=False))[key]
    assert (resolved["outcome"], resolved["note"]) == ("filled", "seen on the exchange")
    assert resolved["detail"]["ok"] is True, "the late result is kept"
    with pytest.raises(NotFound):
        engine.resolve_intent("exec_wf_00000000:trade", "filled")
    with pytest.raises(TypeError, match="idempotency_key must be a str, not int"):
        engine.resolve_intent(123, "filled")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        engine.resolve_intent(key, "completed")
    with pytest.raises(ValueError, match="outcome"):
        engine.resolve_intent(key, "maybe")


def test_a_cancelled_action_records_its_late_result(make_engine: EngineFactory,
                                                    tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    action = Action(block=True, raises=TimeoutError("no answer"))
    handle = engine.submit(trade_workflow("wf", action))
    assert action.entered.wait(5)
    assert engine.cancel(handle.execution_id) == "cancelled"
    assert handle.result(5).status == "cancelled"
    key = f"{handle.execution_id}:trade"
    action.release.set()
    eventually(lambda: by_key(engine.intents())[key]["detail"] is not None,
               what="the late result recorded")
    detail = by_key(engine.intents())[key]["detail"]
    assert (detail["ok"], detail["why"]) == (False, "its execution had ended")
    assert "no answer" in detail["error"]


def test_an_action_refused_in_reduce_only_is_not_started(make_engine: EngineFactory,
                                                         tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    engine.reduce_only("closing positions")
    action = Action()
    result = engine.submit(trade_workflow("wf", action)).result(5)
    assert action.calls == []
    assert result.status == "completed"  # the action is skipped, reason reduce_only
    intent = by_key(engine.intents(unresolved=False))[f"{result.execution_id}:trade"]
    assert intent["outcome"] == "not_started"


class RetriedAction:
    """An idempotent action whose first attempt hangs past its timeout and answers late
    (it filled); later attempts wait for `go`, then raise `raises` (None: return)."""

    def __init__(self, raises: BaseException | None) -> None:
        self.first_entered = threading.Event()
        self.first_release = threading.Event()
        self.second_entered = threading.Event()
        self.go = threading.Event()
        self.raises = raises

    def __call__(self, ctx: NodeContext) -> dict[str, Any]:
        if ctx.attempt == 1:
            self.first_entered.set()
            self.first_release.wait(20.0)
            return {"order": "filled", "attempt": 1}
        self.second_entered.set()
        self.go.wait(20.0)
        if self.raises is not None:
            raise self.raises
        return {"order": "filled", "attempt": ctx.attempt}


def retried_workflow(action: RetriedAction, backoff_s: float) -> Any:
    return trade_workflow("wf", action, idempotent=True, max_restarts=1, timeout_s=0.5,
                          backoff_min_s=backoff_s, backoff_max_s=backoff_s)


def test_a_retry_that_fails_leaves_open_the_intent_its_timed_out_attempt_left(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """Attempt 1 timed out and filled late; attempt 2 (same key) raised: the intent stays
    open for an operator, with attempt 1's late result."""
    engine = make_engine(journal_config(tmp_path))
    action = RetriedAction(ConnectionError("exchange unreachable"))
    handle = engine.submit(retried_workflow(action, 0.01))
    assert action.first_entered.wait(10)  # its intent is committed: attempt 1's row
    key = f"{handle.execution_id}:trade"
    opened = by_key(engine.intents())[key]
    first = (opened["started_at"], opened["seq_at"])
    assert action.second_entered.wait(10)
    action.first_release.set()  # attempt 1 answers late, before attempt 2 ends
    eventually(lambda: by_key(engine.intents())[key]["detail"] is not None,
               what="attempt 1's late result recorded")
    action.go.set()
    result = handle.result(10)
    assert (result.status, result.error_type) == ("failed", "ConnectionError")
    intent = by_key(engine.intents())[key]
    # Still attempt 1's: its number, start and seq (retention keeps its events from there).
    assert (intent["outcome"], intent["attempt"]) == (None, 1)
    assert (intent["started_at"], intent["seq_at"]) == first
    assert intent["detail"]["value"] == {"order": "filled", "attempt": 1}


def test_a_retry_refused_in_reduce_only_leaves_open_the_intent_its_attempt_left(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = make_engine(journal_config(tmp_path))
    action = RetriedAction(None)
    events = Recorder().follow(engine)
    handle = engine.submit(retried_workflow(action, 0.5))
    events.wait_type("node_retrying")
    engine.reduce_only("closing positions")  # before the retry's backoff is out
    action.first_release.set()
    result = handle.result(10)
    assert (result.status, result.error_type) == ("failed", "NodeTimeout")
    assert not action.second_entered.is_set()
    key = f"{handle.execution_id}:trade"
    eventually(lambda: by_key(engine.intents())[key]["detail"] is not None,
               what="attempt 1's late result recorded")
    intent = by_key(engine.intents())[key]
    assert intent["outcome"] is None, "attempt 1 may have filled: not 'not_started'"
    assert intent["attempt"] == 1, "the refused attempt 2 never ran: the row stays attempt 1's"
    assert intent["detail"]["value"] == {"order": "filled", "attempt": 1}


def test_a_retry_that_completes_closes_the_intent_its_attempt_left_open(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """The same key's later success covers it (the exchange dedups on the key)."""
    engine = make_engine(journal_config(tmp_path))
    action = RetriedAction(None)
    handle = engine.submit(retried_workflow(action, 0.01))
    assert action.second_entered.wait(10)
    action.go.set()
    assert handle.result(10).status == "completed"
    action.first_release.set()
    key = f"{handle.execution_id}:trade"
    eventually(lambda: by_key(engine.intents(unresolved=False))[key]["detail"] is not None,
               what="attempt 1's late result recorded")
    intent = by_key(engine.intents(unresolved=False))[key]
    assert (intent["outcome"], intent["attempt"]) == ("completed", 1)
    assert key not in by_key(engine.intents())


def test_halt_while_an_action_waits_for_its_intent_commit(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    disk = Disk(journal)
    rec = Recorder().follow(engine)
    gave_up = threading.Event()
    durable = engine._durable
    assert durable is not None
    not_started = durable.not_started

    def spy(run: Any, reason: str) -> None:
        not_started(run, reason)
        gave_up.set()

    monkeypatch.setattr(durable, "not_started", spy)

    def hold_the_disk(ctx: NodeContext) -> bool:
        disk.hold()  # the action's intent cannot commit until released
        return True

    action = Action()
    handle = engine.submit(trade_workflow("wf", action, condition=hold_the_disk))
    assert disk.holding.wait(5)
    replies: list[dict[str, Any]] = []
    halting = threading.Thread(target=lambda: replies.append(engine.halt("stop now")))
    asked = time.monotonic()
    halting.start()
    try:
        # In memory at once, and the waiting action gives up without the disk.
        eventually(lambda: engine.state is EmergencyState.HALT, timeout=1.0,
                   what="HALT in memory while the disk is held")
        assert gave_up.wait(1.0), "the action waiting for its intent saw the HALT"
        assert time.monotonic() - asked < 1.0
        assert halting.is_alive(), "the reply waits for the HALT's own commit"
    finally:
        disk.release()
    released = time.monotonic()
    halting.join(5)
    assert not halting.is_alive()
    assert time.monotonic() - released < 1.0, "halt() waited for nothing but its commit"
    assert replies == [{"state": "HALT", "previous_state": "NORMAL"}]
    assert raw_rows(tmp_path, "SELECT state FROM emergency_history") == [("HALT",)]
    result = handle.result(5)
    assert result.status == "halted"
    assert action.calls == [], "an action whose intent was not committed never starts"
    key = f"{handle.execution_id}:trade"
    intent = by_key(engine.intents(unresolved=False))[key]
    assert intent["outcome"] == "not_started"
    trade = [e for e in rec.for_execution(handle.execution_id) if e.get("node_id") == "trade"]
    assert [e["type"] for e in trade] in ([], ["node_skipped"])


def test_halt_while_writes_fail_answers_at_once_and_the_waiting_action_never_starts(
        make_engine: EngineFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(journal_config(tmp_path))
    journal = journal_of(engine)
    disk = Disk(journal)
    rec = Recorder().follow(engine)

    def break_the_disk(ctx: NodeContext) -> bool:
        disk.hold()
        journal._testing_fail_commits(10**9)  # the action's intent can never commit
        return True

    action = Action()
    handle = engine.submit(trade_workflow("wf", action, condition=break_the_disk))
    assert disk.holding.wait(5)
    replies: list[dict[str, Any]] = []
    halting = threading.Thread(target=lambda: replies.append(engine.halt("operator")))
    halting.start()
    eventually(lambda: engine.state is EmergencyState.HALT, timeout=1.0, what="HALT")
    released = time.monotonic()
    disk.release()  # the held commit fails now, and every retry after it
    halting.join(5)
    assert not halting.is_alive()
    assert time.monotonic() - released < 1.0, "a failing disk must not hold up the halt"
    assert replies == [{"state": "HALT", "previous_state": "NORMAL"}]
    assert engine.status()["journal"]["failing"] is True
    assert rec.subscription is not None
    assert rec.subscription.next_seq <= journal.last_committed_seq() + 1
    started = time.monotonic()
    assert engine.halt("again")["state"] == "HALT"
    assert time.monotonic() - started < 1.0

    journal._testing_fail_commits(0)
    assert handle.result(5).status == "halted"
    assert action.calls == []
    intent = by_key(engine.intents(unresolved=False))[f"{handle.execution_id}:trade"]
    assert intent["outcome"] == "not_started"
    changes = [e for e in rec.events if e["type"] == "emergency_state_changed"]
    assert [(e["state"], e["source"]) for e in changes] == [("HALT", "manual")]


def test_intents_left_open_are_logged_or_halt_the_next_start(make_engine: EngineFactory,
                                                             tmp_path: Path) -> None:
    first = make_engine(journal_config(tmp_path))
    action = Action(block=True)
    handle = first.submit(trade_workflow("wf", action))
    assert action.entered.wait(5)
    first.stop()  # the action is still running: its outcome is unknown
    action.release.set()
    key = f"{handle.execution_id}:trade"

    with captured_logs() as logs:
        second = make_engine(journal_config(tmp_path))
    assert second.state is EmergencyState.NORMAL
    logged = [e for e in logs if e["event"] == "unresolved_action_intent"]
    assert [(e["idempotency_key"], e["log_level"]) for e in logged] == [(key, "warning")]
    assert action.calls == [key], "never re-run"
    second.stop()

    halting = journal_config(tmp_path, journal={"halt_on_unresolved_intents": True})
    third = make_engine(halting)
    assert third.state is EmergencyState.HALT
    last = third.emergency_history()[-1]
    assert (last["state"], last["source"], last["origin"]) == ("HALT", "journal", "engine")
    assert "1 action intent" in last["reason"]
    assert third.submit(trade_workflow("wf", Action())).result(5).status == "refused"
    third.resolve_intent(key, "not_filled", "checked the exchange")
    # The last unresolved intent is reconciled: the HALT it started with ends.
    assert state_now(third) is EmergencyState.NORMAL
    last = third.emergency_history()[-1]
    assert (last["previous_state"], last["state"], last["origin"]) == ("HALT", "NORMAL", "api")
    assert "reconciled" in last["reason"]
    third.stop()

    fourth = make_engine(halting)
    assert fourth.state is EmergencyState.NORMAL, "nothing left to reconcile"
    assert action.calls == [key]


def test_resolving_the_last_intent_never_ends_a_halt_the_engine_restarted_in(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """Found by tests/test_journal_stateful.py: an engine halted by an operator, restarted
    with an open intent and `halt_on_unresolved_intents`, resumed by itself once the
    intent was resolved. A HALT made for the intents by an earlier restart still ends."""
    halting = journal_config(tmp_path, journal={"halt_on_unresolved_intents": True})
    first = make_engine(halting)
    action = Action(block=True)
    handle = first.submit(trade_workflow("wf", action, timeout_s=0.05))
    assert handle.result(5).error_type == "NodeTimeout"  # its intent stays open
    first.halt("operator: the exchange is down")
    first.stop()
    action.release.set()
    key = f"{handle.execution_id}:trade"

    second = make_engine(halting)
    assert second.state is EmergencyState.HALT
    assert second.status()["reason"] == "operator: the exchange is down"
    second.resolve_intent(key, "not_filled", "checked the exchange")
    assert state_now(second) is EmergencyState.HALT, "the operator's HALT ends by a resume"
    assert second.emergency_history()[-1]["reason"] == "operator: the exchange is down"
    second.resume("the exchange is back")
    second.stop()

    third = make_engine(journal_config(tmp_path))
    blocked = Action(block=True)
    reopened = third.submit(trade_workflow("wf", blocked, timeout_s=0.05))
    assert reopened.result(5).error_type == "NodeTimeout"
    third.stop()
    blocked.release.set()
    again = f"{reopened.execution_id}:trade"
    fourth = make_engine(halting)  # halts for the open intent ...
    assert fourth.state is EmergencyState.HALT
    fourth.stop()
    fifth = make_engine(halting)  # ... and comes back in that HALT
    assert fifth.state is EmergencyState.HALT
    fifth.resolve_intent(again, "filled")
    assert state_now(fifth) is EmergencyState.NORMAL, "the intents' own HALT ends"


def test_an_operators_halt_during_the_intents_halt_is_not_ended_by_resolving_them(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """In the HALT a restart made for open intents, an operator's explicit halt (no state
    change: already HALT) makes it theirs: resolving the last intent no longer resumes."""
    halting = journal_config(tmp_path, journal={"halt_on_unresolved_intents": True})
    key = leave_an_open_intent(make_engine, halting)

    second = make_engine(halting)
    assert second.state is EmergencyState.HALT
    second.halt("operator: keep it halted, the exchange is down")
    second.resolve_intent(key, "not_filled", "checked")
    assert state_now(second) is EmergencyState.HALT, "the operator's halt was undone"


def test_an_operators_halt_during_the_intents_halt_holds_across_a_restart(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """Found by tests/test_journal_stateful.py: the operator's explicit halt during the
    intents' HALT (no state change, no event) was kept in memory only, so after one more
    restart resolving the last intent resumed the engine. It is kept with the kill switch's
    state (`halt_held`); the intents' own HALT, across any number of restarts, still ends."""
    halting = journal_config(tmp_path, journal={"halt_on_unresolved_intents": True})
    key = leave_an_open_intent(make_engine, halting)

    second = make_engine(halting)
    assert second.state is EmergencyState.HALT
    second.halt("operator: keep it halted, the exchange is down")
    second.stop()

    third = make_engine(halting)
    assert third.state is EmergencyState.HALT
    third.resolve_intent(key, "not_filled", "checked")
    assert state_now(third) is EmergencyState.HALT, "the operator's halt was undone"
    third.resume("the exchange is back")
    third.stop()

    fourth = make_engine(halting)
    assert fourth.state is EmergencyState.NORMAL, "resumed, nothing left to reconcile"


def test_writes_failing_in_the_intents_halt_hold_it_across_a_restart(
        make_engine: EngineFactory, tmp_path: Path) -> None:
    """A process in the HALT a restart made for open intents whose writes then fail (its
    `halt_held` never reaches the disk) leaves the write-failed mark: the next start comes
    back in that HALT, and resolving the intents no longer ends it (a resume does)."""
    halting = journal_config(tmp_path, journal={"halt_on_unresolved_intents": True})
    key = leave_an_open_intent(make_engine, halting)

    second = make_engine(halting)
    assert second.state is EmergencyState.HALT
    journal_of(second)._testing_fail_commits(10**6)
    assert second.submit(trade_workflow("wf", Action())).result(5).status == "refused"
    eventually(lambda: second.status()["journal"]["failing"], what="writes failing")
    second.stop(timeout=5.0)
    assert (tmp_path / MARK_NAME).exists()

    third = make_engine(halting)
    assert third.state is EmergencyState.HALT
    third.resolve_intent(key, "not_filled", "checked")
    assert state_now(third) is EmergencyState.HALT, "the failed writes' HALT was undone"
    third.resume("disk checked")
    assert state_now(third) is EmergencyState.NORMAL
