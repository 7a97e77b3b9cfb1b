"""`Durable.recover`'s node map for an execution the last process left running, driven
with a journal's answers in hand (no process to kill): an action whose intent was
committed but whose `node_started` was not (a `kill -9` between the two, which group
commit makes likely) may have run, so it ends `cancelled`, never `skipped` or missing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from actors.config import Config
from actors.durable import Durable


@dataclass
class Answers:
    """What `Journal` tells recovery: the open executions, their node states, the intents."""

    open_executions: list[dict[str, Any]]
    unresolved_intents: list[dict[str, Any]]
    node_states: dict[str, dict[str, Any]]
    emitted: list[list[dict[str, Any]]] = field(default_factory=list)

    @property
    def recovery(self) -> Answers:
        return self

    def open_node_states(self, started: dict[str, int]) -> dict[str, dict[str, Any]]:
        return {i: self.node_states[i] for i in started if i in self.node_states}

    def emit(self, events: list[dict[str, Any]]) -> None:
        self.emitted.append(events)


def running(execution_id: str) -> dict[str, Any]:
    return {"execution_id": execution_id, "workflow_id": "wf", "status": "running",
            "bot_id": None, "strategy_id": None, "inputs": {}, "priority": 0,
            "started_at": "2026-12-02T10:00:00.000Z", "started_seq": 1}


def intent(execution_id: str, node_id: str, attempt: int) -> dict[str, Any]:
    return {"execution_id": execution_id, "node_id": node_id, "attempt": attempt,
            "idempotency_key": f"{execution_id}:{node_id}", "started_at": None,
            "detail": None}


def recovered_nodes(answers: Answers, ids: list[str] | None) -> dict[str, Any]:
    durable = Durable(answers, Config())  # type: ignore[arg-type]
    durable.recover(answers, {"wf": ids} if ids is not None else {})  # type: ignore[arg-type]
    (events,) = answers.emitted
    ending = events[-1]
    assert ending["type"] == "execution_failed" and ending["error_type"] == "Interrupted"
    return dict(ending["nodes"])


@pytest.mark.parametrize("registered", [True, False])
def test_an_action_with_an_open_intent_and_no_node_started_ends_cancelled(
        registered: bool) -> None:
    answers = Answers([running("exec_wf_1")], [intent("exec_wf_1", "trade", 1)],
                      {"exec_wf_1": {"price": {"status": "completed", "attempts": 1}}})
    nodes = recovered_nodes(answers, ["price", "trade", "after"] if registered else None)
    assert nodes["trade"] == {"status": "cancelled", "attempts": 1}
    assert nodes["price"]["status"] == "completed"
    if registered:
        assert list(nodes) == ["price", "trade", "after"]
        assert nodes["after"] == {"status": "skipped", "attempts": 0}


def test_a_retry_whose_node_started_was_lost_ends_cancelled_with_its_attempt() -> None:
    answers = Answers([running("exec_wf_2")], [intent("exec_wf_2", "trade", 2)],
                      {"exec_wf_2": {"trade": {"status": "pending", "attempts": 1}}})
    assert recovered_nodes(answers, ["trade"])["trade"] == {"status": "cancelled",
                                                            "attempts": 2}


def test_another_executions_intent_changes_nothing() -> None:
    answers = Answers([running("exec_wf_3")], [intent("exec_wf_4", "trade", 1)],
                      {"exec_wf_3": {"price": {"status": "completed", "attempts": 1}}})
    assert recovered_nodes(answers, ["price", "trade"])["trade"] == {"status": "skipped",
                                                                     "attempts": 0}
