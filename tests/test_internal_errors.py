"""An error in the engine's own handling of an execution ends that execution, with
`InternalError`, and frees its running slot; the engine carries on."""

from __future__ import annotations

from typing import Any

import pytest

from actors import Engine, Node, Workflow
from actors.machine import Execution
from tests.conftest import EngineFactory, Recorder

Broken = type("Broken", (RuntimeError,), {})


def two_step(wf_id: str) -> Workflow:
    return Workflow(wf_id, nodes=[
        Node("a", lambda ctx: 1, category="provider"),
        Node("b", lambda ctx: 2, depends_on=["a"]),
    ])


def one_slot(make_engine: EngineFactory) -> tuple[Engine, Recorder]:
    engine = make_engine({"daemon": {"max_concurrent_executions": 1}})
    rec = Recorder()
    rec.follow(engine)
    return engine, rec


def break_for(monkeypatch: pytest.MonkeyPatch, method: str, wf_id: str) -> None:
    original = getattr(Execution, method)

    def broken(self: Execution, *args: Any, **kwargs: Any) -> Any:
        if self.workflow.id == wf_id:
            raise Broken("engine bug")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Execution, method, broken)


@pytest.mark.parametrize("method", ["succeeded", "dispatched"])
def test_an_error_handling_an_outcome_fails_the_execution_and_frees_its_slot(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    engine, rec = one_slot(make_engine)
    break_for(monkeypatch, method, "doomed")
    doomed = engine.submit(two_step("doomed"))
    after = engine.submit(two_step("fine"))  # queued behind the doomed one's slot
    result = doomed.result(timeout=10)
    assert result.status == "failed"
    assert result.error_type == "InternalError"
    assert "Broken: engine bug" in (result.error or "")
    assert after.result(timeout=10).status == "completed"
    events = rec.wait_for(lambda evs: sum(e["type"].startswith("execution_") and
                                          e["type"] != "execution_started" for e in evs) >= 2)
    doomed_types = [e["type"] for e in events if e.get("execution_id") == doomed.execution_id]
    assert doomed_types[-1] == "execution_failed"
    assert sum(t.startswith("execution_") and t != "execution_started"
               for t in doomed_types) == 1
    assert engine.status()["running"] == 0


def test_an_error_while_closing_still_publishes_one_terminal_event(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, rec = one_slot(make_engine)
    break_for(monkeypatch, "close", "doomed")
    doomed = engine.submit(two_step("doomed"))
    result = doomed.result(timeout=10)
    assert (result.status, result.error_type) == ("failed", "InternalError")
    rec.wait_for(lambda evs: any(e["type"] == "execution_failed" for e in evs))
    terminal = [e for e in rec.for_execution(doomed.execution_id)
                if e["type"].startswith("execution_") and e["type"] != "execution_started"]
    assert [e["type"] for e in terminal] == ["execution_failed"]
    assert terminal[0]["error_type"] == "InternalError"
    assert engine.submit(two_step("fine")).result(timeout=10).status == "completed"


def test_an_error_starting_an_execution_fails_it_instead_of_stranding_it(
        make_engine: EngineFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    engine, rec = one_slot(make_engine)
    break_for(monkeypatch, "start", "doomed")
    handle = engine.submit(two_step("doomed"))
    result = handle.result(timeout=10)
    assert (result.status, result.error_type) == ("failed", "InternalError")
    rec.wait_for(lambda evs: any(e["type"] == "execution_failed" for e in evs))
    # It never started: its execution_started right before its end, as for a queued one.
    assert rec.types(handle.execution_id) == ["execution_started", "execution_failed"]
    assert engine.submit(two_step("fine")).result(timeout=10).status == "completed"
