"""A check of one execution's published events against CONTRACT section 5's order and
section 7's fail-fast (used by tests/test_machine_stateful.py)."""

from __future__ import annotations

from actors.ending import TERMINAL_EVENT
from actors.machine import Event, Execution


def check_stream(exe: Execution, events: list[Event], failed_node: int | None) -> None:
    """CONTRACT section 5's order for one execution, and fail-fast's shape."""
    wf = exe.workflow
    assert events[0]["type"] == "execution_started"
    first = events[0]["seq"]
    assert [e["seq"] for e in events] == list(range(first, first + len(events)))
    attempts: dict[str, int] = {}  # node id -> attempts started
    open_attempt: dict[str, int] = {}  # node id -> the started attempt with no outcome yet
    completed: set[str] = set()
    skipped: dict[str, str] = {}
    final_failure: str | None = None
    for k, event in enumerate(events[1:], 1):
        kind, node_id = event["type"], str(event.get("node_id"))
        if final_failure is not None:  # fail-fast: the rest of the batch is skips, the end
            assert kind in ("node_skipped", "execution_failed"), kind
        if kind == "node_started":
            assert node_id not in completed and node_id not in skipped
            assert node_id not in open_attempt, f"{node_id} started twice at once"
            i = wf.index[node_id]
            assert {wf.nodes[d].id for d in wf.deps[i]} <= completed, node_id
            attempts[node_id] = attempts.get(node_id, 0) + 1
            assert event["attempt"] == attempts[node_id], event
            open_attempt[node_id] = event["attempt"]
        elif kind in ("node_completed", "node_failed"):
            assert open_attempt.pop(node_id, None) == event["attempt"], (kind, node_id)
            if kind == "node_completed":
                completed.add(node_id)
            elif event["final"]:
                final_failure = event["error_type"]
            else:
                retry = events[k + 1]
                assert retry["type"] == "node_retrying" and retry["node_id"] == node_id
                assert retry["attempt"] == event["attempt"] + 1
                assert retry["error_type"] == event["error_type"]
        elif kind == "node_retrying":
            before = events[k - 1]
            assert before["type"] == "node_failed" and before["final"] is False
        elif kind == "node_skipped":
            assert node_id not in skipped and node_id not in completed
            assert node_id not in open_attempt, f"{node_id} skipped while running"
            skipped[node_id] = event["reason"]
        elif kind == "progress":
            assert event["nodes_completed"] == len(completed)
        else:
            assert kind in TERMINAL_EVENT.values() and k == len(events) - 1, kind
            if final_failure is not None:
                assert event["error_type"] == final_failure
            for node_id in open_attempt:  # started and never answered: cancelled
                assert event["nodes"][node_id]["status"] == "cancelled"
    if failed_node is not None:
        below = {wf.nodes[j].id for j in wf.closure.descendants(failed_node)}
        never_reached = {n for n in below if skipped.get(n) not in ("condition_false",
                                                                    "reduce_only")}
        assert all(skipped.get(n) == "upstream_failed" for n in never_reached), skipped
